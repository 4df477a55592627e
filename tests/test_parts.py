"""Index parts (issue 8): exact always, lexical and dense chosen at build time; the text is kept
once (in the FM-index); every combination opens and answers; a missing part is a clear error."""

import json

import pytest

from retrieval import Index
from retrieval.errors import InputError

DOCS = [f"Document {i} talks about {topic}: the marker-{i}-zq sentence is unique to it."
        for i, topic in enumerate(["rivers", "oceans", "mountains", "deserts", "forests"] * 4)]
COMBOS = [("exact",), ("exact", "lexical"), ("exact", "dense"), ("exact", "lexical", "dense")]


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parts")
    src = tmp / "c.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCS)))
    return {parts: Index.build([src], tmp / "-".join(parts), parts=",".join(parts), device="cpu") for parts in COMBOS}


@pytest.mark.parametrize("parts", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_every_combination_opens_and_answers(indexes, parts):
    idx = Index.open(indexes[parts].path)
    assert idx.parts == parts
    for i in (0, 7, 19):  # exact answers, against the documents themselves
        assert idx.count(f"marker-{i}-zq") == 1
        docs, _ = idx.find(f"marker-{i}-zq")
        assert docs.tolist() == [i] and idx.extract(i) == DOCS[i]
    assert idx.count("Document") == len(DOCS)
    modes = {"exact": "passages", "lexical": "lexical", "dense": "dense", "hybrid": "passages"}
    for mode, needs in modes.items():
        have = needs in parts or (needs == "passages" and len(parts) > 1)
        if have:
            hits = idx.search('"marker-7-zq"' if mode == "exact" else "marker-7-zq rivers", k=3, mode=mode, rerank=False)
            assert hits and all(h.text == DOCS[h.doc_id].encode()[h.start:h.end].decode() for h in hits)
            if mode != "dense":
                assert hits[0].doc_id == 7
        else:
            with pytest.raises(InputError, match=r"needs (the \w+ part|passages).*rebuild with --parts"):
                idx.search("rivers", k=3, mode=mode, rerank=False)


@pytest.mark.parametrize("parts", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_info_sizes_are_the_files_and_text_is_stored_once(indexes, parts):
    idx = indexes[parts]
    info = idx.info()
    files = [f for f in idx.root.rglob("*") if f.is_file()]
    assert set(info["parts"]) == set(parts) | ({"passages"} if len(parts) > 1 else set())
    assert sum(p["bytes"] for p in info["parts"].values()) == info["index_bytes"] == sum(f.stat().st_size for f in files)
    # no file but the FM-index shards holds the documents' text (the FM-index is the only copy)
    for f in files:
        if f.suffix != ".fmi":
            data = f.read_bytes()
            assert not any(f"marker-{i}-zq sentence".encode() in data for i in range(len(DOCS))), f


def test_parts_argument_errors(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(InputError, match="--parts lexical: every index has the exact part"):
        Index.build([src], tmp_path / "a", parts="lexical")
    with pytest.raises(InputError, match="--parts exact,bm25: use a comma-separated list of exact, lexical, dense"):
        Index.build([src], tmp_path / "b", parts="exact,bm25")
    assert Index.build([src], tmp_path / "c", parts="exact,lexical,dense", dense=False).parts == ("exact", "lexical")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

"""`rtv contamination` through click's CliRunner, on a real small index."""

import gzip
import json
import random
import shutil

import pytest
from click.testing import CliRunner

from retrieval import Index
from rtv_cli.contamination_cmd import contamination
from rtv_cli.main import cli

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta", "iota", "rho", "tau",
         "upsilon", "lambda", "mu", "nu", "xi", "omicron", "pi", "chi", "psi", "epsilon", "eta", "phi"]


def _text(rng, n):
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 999)) for _ in range(n))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    rng = random.Random(7)
    tmp = tmp_path_factory.mktemp("cli")
    leaked = [_text(rng, 30) for _ in range(3)]
    fresh = [_text(rng, 30) for _ in range(5)]
    docs = [_text(rng, 200) for _ in range(40)]
    for i, t in enumerate(leaked):
        docs[i * 7] += " " + t + " <b>&amp;"
    (tmp / "corpus.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    Index.build([tmp / "corpus.jsonl"], tmp / "idx", dense=False)
    rows = [{"task_id": f"L{i}", "prompt": t + " <b>&amp;", "solution": "return 1"} for i, t in enumerate(leaked)]
    rows += [{"task_id": f"F{i}", "prompt": t, "solution": "return 2"} for i, t in enumerate(fresh)]
    bench = tmp / "bench.jsonl.gz"
    bench.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    other = tmp / "other.csv"
    other.write_text("question,id\n" + "\n".join(f'"{t}",q{i}' for i, t in enumerate(fresh + leaked[:1])) + "\n")
    return tmp


def _run(args):
    return CliRunner().invoke(cli, ["contamination", *map(str, args)], catch_exceptions=False)


def test_field_missing_from_one_of_several_benchmarks(env):
    # --field applies to every benchmark; the CSV has no "prompt" column
    res = _run([env / "idx", env / "bench.jsonl.gz", env / "other.csv", "--field", "prompt", "--json"])
    assert res.exit_code == 1 and res.stdout == ""  # checked before any benchmark is scored
    assert "other.csv" in res.output and "unknown field 'prompt'; fields present: question, id" in res.output


def test_json_output(env, tmp_path):
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    res = _run([env / "idx", env / "bench.jsonl.gz", "--field", "prompt", "--json", "--html", html, "--markdown", md])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    entries = {o["id"]: o for o in lines if o["type"] == "entry"}
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["benchmark"] == "bench"
    assert {k for k, o in entries.items() if o["bucket"] == "dirty"} == {"L0", "L1", "L2"}
    assert all(o["bucket"] == "clean" for k, o in entries.items() if k.startswith("F"))
    assert entries["L1"]["matches"][0]["doc_id"] == 7 and "<b>&amp;" in entries["L1"]["matched_text"]
    assert summary["buckets"] == {"clean": 5, "suspicious": 0, "dirty": 3}
    page = html.read_text()
    assert "<b>&amp;" not in page and "&lt;b&gt;&amp;amp;" in page and "base64," in page
    assert "| bench | prompt | 8 | 8 | 5 | 0 | 3 | 37.5% |" in md.read_text()


def test_several_benchmarks_markdown_and_table(env, tmp_path):
    md = tmp_path / "bulletin.md"
    res = _run([env / "idx", env / "bench.jsonl.gz", env / "bench.jsonl.gz", "--field", "prompt",
                "--markdown", md, "--thresholds", "0.1,0.5", "--unit", "tokens", "--window", "8"])
    assert res.exit_code == 0, res.output
    assert "dirty%" in res.stdout and "8-token windows" in res.stdout
    text = md.read_text()
    assert text.count("| bench | prompt | 8 |") == 2 and "score < 0.1" in text and "score >= 0.5" in text


def test_default_field_and_csv_ids(env):
    res = _run([env / "idx", env / "other.csv", "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[-1]["fields"] == ["question"]
    assert {o["id"]: o["bucket"] for o in lines[:-1]}["q5"] == "dirty"


@pytest.mark.parametrize("extra,message", [
    (["--field", "nope"], "unknown field 'nope'; fields present: task_id, prompt, solution"),
    (["--field", "prompt", "--id-field", "nope"], "unknown id field 'nope'"),
])
def test_bad_fields(env, extra, message):
    res = _run([env / "idx", env / "bench.jsonl.gz", *extra])
    assert res.exit_code == 1 and message in res.output and "bench.jsonl.gz" in res.output
    assert "Traceback" not in res.output


def test_bad_files(env, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": 1, "prompt": ""}) + "\n")
    res = _run([env / "idx", empty])
    assert res.exit_code == 1 and "all 1 entries are empty" in res.output
    res = _run([env / "idx", tmp_path / "missing.jsonl"])
    assert res.exit_code == 1 and "missing.jsonl: no such benchmark file" in res.output
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    res = _run([env / "idx", broken, "--field", "prompt"])
    assert res.exit_code == 1 and "broken.jsonl.gz" in res.output and "Traceback" not in res.output
    res = _run([env / "idx", tmp_path / "x.docx"])
    assert res.exit_code == 1
    res = _run([env / "idx", env / "bench.jsonl.gz", "--html", tmp_path / "no" / "r.html"])
    assert res.exit_code == 1 and "directory does not exist" in res.output


def test_index_without_exact_part_or_dense(env, tmp_path):
    res = _run([tmp_path / "nothing-here", env / "bench.jsonl.gz"])
    assert res.exit_code == 1 and "nothing-here" in res.output
    broken = tmp_path / "idx"
    shutil.copytree(env / "idx", broken)
    shutil.rmtree(broken / "gen-000001" / "exact")
    res = _run([broken, env / "bench.jsonl.gz", "--field", "prompt"])
    assert res.exit_code == 1 and "shard" in res.output.lower() and "Traceback" not in res.output
    manifest = json.loads((env / "idx" / "gen-000001" / "manifest.json").read_text())
    manifest["exact"] = None  # an index recorded without an exact part
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("exact/")}
    from retrieval.manifest import write_manifest

    write_manifest(broken / "gen-000001", manifest)  # resealed, as a writer would
    res = _run([broken, env / "bench.jsonl.gz", "--field", "prompt"])
    assert res.exit_code == 1 and "no exact part" in res.output
    res = _run([env / "idx", env / "bench.jsonl.gz", "--field", "prompt", "--semantic"])
    assert res.exit_code == 1 and "no dense part" in res.output


@pytest.mark.parametrize("args", [
    ["--unit", "words"], ["--window", "0"], ["--thresholds", "0.9,0.1"], ["--thresholds", "x"], [],
])
def test_usage_errors_exit_2(env, args):
    base = [env / "idx"] + ([env / "bench.jsonl.gz"] if args else [])
    res = CliRunner().invoke(contamination, [*map(str, base), *args])
    assert res.exit_code == 2, res.output

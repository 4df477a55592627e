"""Cold starts: the exact and lexical commands never import the dense/rerank stack (torch, FAISS,
sentence-transformers, ...). Checked independently of timing: each command runs in a fresh
interpreter through a wrapper that reports, at exit, which of those modules were imported."""

import json
import subprocess
import sys

import pytest

HEAVY = ["torch", "faiss", "sentence_transformers", "transformers", "onnxruntime", "openvino", "sklearn",
         "scipy", "pandas"]
WRAPPER = f"""
import atexit, json, os, sys
@atexit.register
def _report():
    with open(os.environ["RTV_IMPORT_REPORT"], "w") as f:
        json.dump(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})), f)
sys.argv = ["rtv"] + sys.argv[1:]
from rtv_cli.main import cli
cli()
"""


@pytest.fixture(scope="module")
def dense_index(tmp_path_factory):
    """A real index with every part, dense included (the shipped model), so that the commands
    below could reach for FAISS or the model if they were careless."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    from retrieval import Index

    tmp = tmp_path_factory.mktemp("cold")
    src = tmp / "c.jsonl"
    words = "protein cell gene enzyme membrane receptor signal kinase".split()
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": f"{words[i % 8]} binds {words[(i * 3) % 8]} "
                                                              f"in study {i}"}) + "\n" for i in range(40)))
    Index.build([src], tmp / "idx", id_field="id", dense=True, recipe="flat").close()
    return tmp / "idx"


def imported(args, tmp_path) -> list[str]:
    report = tmp_path / "imports.json"
    out = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
                              "RTV_IMPORT_REPORT": str(report)})
    assert out.returncode == 0, (args, out.stderr[-2000:])
    return json.loads(report.read_text())


@pytest.mark.parametrize("args", [
    ["count", "{idx}", "protein", "kinase"],
    ["find", "{idx}", "protein", "--limit", "3"],
    ["query", "{idx}", "protein binds", "--mode", "lexical"],
    ["query", "{idx}", "protein", "--mode", "exact"],
    ["info", "{idx}"],
    ["--help"],
])
def test_exact_and_lexical_commands_import_nothing_heavy(dense_index, tmp_path, args):
    assert imported([a.format(idx=dense_index) for a in args], tmp_path) == []


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_a_dense_query_on_cpu_imports_no_torch(dense_index, tmp_path, mode):
    """Built with a CPU runtime installed, the index's model was exported at `rtv index` time: a dense
    (or hybrid) query embeds with ONNX Runtime / OpenVINO and searches with FAISS, and never imports
    torch, transformers or sentence-transformers. The same wrapper sees the runtime and FAISS
    imported late, so it is not blind."""
    from retrieval.dense.embedder import _runtime

    if _runtime() is None:
        pytest.skip("neither onnxruntime nor openvino installed: dense queries run sentence-transformers")
    got = set(imported(["query", str(dense_index), "protein binds", "--mode", mode, "--no-rerank", "-k", "2",
                        "--device", "auto"], tmp_path))
    assert "faiss" in got and got & {"onnxruntime", "openvino"}, got
    assert not got & {"torch", "transformers", "sentence_transformers"}, got

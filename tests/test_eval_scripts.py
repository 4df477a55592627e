"""Every eval/ script compiles: they run by hand or on another machine, so nothing else here would
notice a script (or a module the others import, such as eval/bench_ivf.py's write_recipe) that no
longer parses until someone needs its numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

EVAL = Path(__file__).resolve().parents[1] / "eval"
SCRIPTS = sorted(EVAL.glob("*.py"))


def test_there_are_eval_scripts():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_eval_script_compiles(path):
    compile(path.read_text(encoding="utf-8"), str(path), "exec")  # SyntaxError fails the test

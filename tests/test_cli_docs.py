"""docs/cli.md is the `rtv` reference generated from the commands' --help by cog; it must be current."""

import contextlib
import io
import re
from pathlib import Path

import pytest

cogapp = pytest.importorskip("cogapp")  # the `test` extra; under RTV_REQUIRE_ALL=1 (CI) a missing one fails

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
REGENERATE = "cog -r docs/cli.md"


def _cog(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = cogapp.Cog().main(["cog", *args])
    return status, out.getvalue()


def test_cli_reference_is_current():
    status, output = _cog("--check", "--diff", "--check-fail-msg", f"run `{REGENERATE}`", str(DOC))
    assert status == 0, (f"docs/cli.md is out of date with the commands' --help; regenerate it from the "
                         f"repository root with `{REGENERATE}`\n{output}")


def test_cli_reference_covers_every_command():
    from rtv_cli.main import COMMANDS

    headings = re.findall(r"^## (rtv(?: [\w-]+)*)$", DOC.read_text(), flags=re.M)
    assert headings[0] == "rtv"
    assert sorted(headings[1:]) == sorted(f"rtv {name}" for name in COMMANDS)


def test_the_check_fails_on_a_stale_reference(tmp_path):
    """The check above can fail: a copy with one help line changed is reported stale."""
    text = DOC.read_text()
    stale = text.replace("Show this message and exit.", "Show this message and leave.", 1)
    assert stale != text
    copy = tmp_path / "cli.md"
    copy.write_text(stale)
    status, output = _cog("--check", "--check-fail-msg", f"run `{REGENERATE}`", str(copy))
    assert status != 0
    assert REGENERATE in output

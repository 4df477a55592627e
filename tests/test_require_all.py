"""RTV_REQUIRE_ALL=1 turns import skips into failures and leaves other skips (no GPU) alone.

Runs pytest in a subprocess on tiny generated test files, with this suite's own conftest.py,
once with the variable and once without, and reads each test's outcome from the JUnit XML.
"""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MISSING = "rtv_no_such_module_zz"

FILES = {
    # module-level importorskip: a skip of the whole module (or a collection error)
    "test_mod_missing.py": f"""
import pytest
pytest.importorskip("{MISSING}")

def test_never_runs():
    pass
""",
    "test_mod_from_import.py": f"""
from pytest import importorskip
importorskip("{MISSING}.sub")

def test_never_runs():
    pass
""",
    "test_in_body.py": f"""
import pytest

@pytest.fixture
def needs_missing():
    return pytest.importorskip("{MISSING}")

def test_importorskip_in_test():
    pytest.importorskip("{MISSING}")

def test_importorskip_in_fixture(needs_missing):
    pass

def test_skip_in_except_importerror():
    try:
        import {MISSING}  # noqa: F401
    except ImportError:
        pytest.skip("{MISSING} is not installed")

def test_present_module_is_returned():
    json = pytest.importorskip("json")
    assert json.loads("[1]") == [1]

def test_minversion_too_high():
    pytest.importorskip("pytest", minversion="999")
""",
    "test_gpu.py": """
import pytest

@pytest.mark.skipif(True, reason="FAISS sees no GPU")
def test_gpu_skipif():
    pass

def test_gpu_skip_call():
    pytest.skip("torch sees no CUDA GPU")

def test_passes():
    assert True
""",
    "test_mod_gpu.py": """
import pytest
pytest.skip("FAISS sees no GPU", allow_module_level=True)

def test_never_runs():
    pass
""",
}


def _outcomes(xml_path):
    """{name: 'passed' | 'skipped' | 'failure' | 'error'} from a JUnit XML file."""
    out = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        out[f"{case.get('classname')}::{case.get('name')}"] = kinds[0] if kinds else "passed"
    return out


def _run(tmp_path, require, *args):
    env = {k: v for k, v in os.environ.items() if k != "RTV_REQUIRE_ALL"}
    if require:
        env["RTV_REQUIRE_ALL"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    xml = tmp_path / f"report-{int(require)}-{len(args)}.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                           f"--junitxml={xml}", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return proc, _outcomes(xml)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("require_all")
    shutil.copy(HERE / "conftest.py", tmp / "conftest.py")  # this suite's own wiring
    (tmp / "pytest.ini").write_text("[pytest]\n")  # keep the parent project's ini out
    for name, text in FILES.items():
        (tmp / name).write_text(text)
    return tmp


def _by_suffix(outcomes, suffix):
    hits = [v for k, v in outcomes.items() if k.endswith(suffix)]
    assert len(hits) == 1, (suffix, outcomes)
    return hits[0]


def test_without_variable_import_skips_are_skips(suite):
    proc, got = _run(suite, False, "--continue-on-collection-errors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _by_suffix(got, "test_mod_missing") == "skipped"
    assert _by_suffix(got, "test_mod_from_import") == "skipped"
    for name in ("test_importorskip_in_test", "test_importorskip_in_fixture", "test_skip_in_except_importerror",
                 "test_minversion_too_high", "test_gpu_skipif", "test_gpu_skip_call"):
        assert _by_suffix(got, name) == "skipped", name
    assert _by_suffix(got, "test_mod_gpu") == "skipped"
    assert _by_suffix(got, "test_present_module_is_returned") == "passed"
    assert _by_suffix(got, "test_passes") == "passed"


def test_with_variable_import_skips_fail_and_gpu_skips_stay(suite):
    proc, got = _run(suite, True, "--continue-on-collection-errors")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # module level: collection errors
    assert _by_suffix(got, "test_mod_missing") == "error"
    assert _by_suffix(got, "test_mod_from_import") == "error"
    # in a test body, in a fixture (setup error), a manual skip inside `except ImportError`
    assert _by_suffix(got, "test_importorskip_in_test") == "failure"
    assert _by_suffix(got, "test_importorskip_in_fixture") == "error"
    assert _by_suffix(got, "test_skip_in_except_importerror") == "failure"
    assert _by_suffix(got, "test_minversion_too_high") == "failure"
    # not import skips: unchanged
    assert _by_suffix(got, "test_present_module_is_returned") == "passed"
    assert _by_suffix(got, "test_passes") == "passed"
    assert _by_suffix(got, "test_gpu_skipif") == "skipped"
    assert _by_suffix(got, "test_gpu_skip_call") == "skipped"
    assert _by_suffix(got, "test_mod_gpu") == "skipped"
    assert f"RTV_REQUIRE_ALL=1: '{MISSING}' cannot be imported" in proc.stdout
    assert "RTV_REQUIRE_ALL=1: a skip caused by a missing import fails the run" in proc.stdout


def test_with_variable_a_module_level_import_skip_fails_a_plain_run(suite):
    """What CI runs: no --continue-on-collection-errors; the run stops non-zero."""
    proc, _ = _run(suite, True, "test_mod_missing.py")
    assert proc.returncode != 0
    assert "1 error" in proc.stdout, proc.stdout
    proc, got = _run(suite, False, "test_mod_missing.py")
    assert proc.returncode == 5 and "1 skipped" in proc.stdout, proc.stdout  # 5: nothing ran, nothing failed

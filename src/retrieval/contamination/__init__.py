"""Benchmark contamination: how much of each benchmark entry occurs verbatim in the corpus.

    from retrieval import Index
    from retrieval.contamination import BenchmarkRun, ContaminationConfig, Thresholds

    index = Index.open("my-index")
    run = BenchmarkRun(index, "HumanEval.jsonl.gz", fields=["prompt", "canonical_solution"])
    for result in run:              # streamed, one EntryResult per entry, in file order
        print(result.to_json())
    print(run.summary.to_json())    # buckets, rates, histogram, thresholds

Reports: `markdown_bulletin`, `html_report`, `text_table` (see report.py).
Near-duplicates through the dense index: `SemanticChecker` (see semantic.py).
"""

from .readers import BenchmarkEntry, BenchmarkReader
from .report import html_report, markdown_bulletin, text_table
from .scoring import (BUCKETS, DEFAULT_WINDOW, BenchmarkRun, ContaminationConfig, EntryResult, Scorer, Summary,
                      Thresholds, check_benchmark)
from .semantic import SemanticChecker

__all__ = ["BenchmarkEntry", "BenchmarkReader", "BenchmarkRun", "ContaminationConfig", "EntryResult", "Scorer",
           "Summary", "Thresholds", "check_benchmark", "SemanticChecker", "html_report", "markdown_bulletin",
           "text_table", "BUCKETS", "DEFAULT_WINDOW"]

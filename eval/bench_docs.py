"""Document listing of frequent patterns (`docs`, `cnf`): rtv's bitmap path with early exit vs
locating every occurrence and deduplicating its documents (what `docs` did before), side by side
on the same shard in one run.

Corpora: one document of one repeated letter (the worst case reported: `cnf` over a 200 MB index
of one letter ran past 60 s at 1.7 GB), and 1,000 documents of it.

    python eval/bench_docs.py --mb 20      # writes eval/results/bench_docs.json
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=20)
    args = ap.parse_args()
    from retrieval import _fm_index as fm

    n = args.mb * 1_000_000
    rows = []
    for n_docs in (1, 1000):
        size = n // n_docs
        text = bytearray()
        for _ in range(n_docs):
            text += b"a" * size + b"\xff"
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "s.fmi")
            fm.build_shard(text, path, 32, 32)
            shard = fm.Shard(path, False)
            occ = shard.count(b"a")
            t_new, docs = timed(lambda: shard.docs(b"a"))
            t_cnf, both = timed(lambda: shard.cnf([[b"a"], [b"aa"]]))
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t_old, old = timed(lambda: np.unique(shard.locate(b"a", 0, occ)[0]))
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            assert docs.tolist() == old.tolist() == both.tolist() == list(range(n_docs))
            rows.append({"documents": n_docs, "text_bytes": len(text), "occurrences": occ,
                         "docs_s": round(t_new, 4), "cnf_two_clauses_s": round(t_cnf, 4),
                         "locate_all_then_unique_s": round(t_old, 3),
                         "locate_all_peak_rss_growth_mb": round((rss1 - rss0) / 1024, 1)})
            del text
    print(f"{'documents':>10}{'occurrences':>14}{'docs() s':>11}{'cnf s':>9}{'locate-all s':>14}")
    for r in rows:
        print(f"{r['documents']:>10}{r['occurrences']:>14,}{r['docs_s']:>11.4f}{r['cnf_two_clauses_s']:>9.4f}"
              f"{r['locate_all_then_unique_s']:>14.3f}")
    out = {**provenance(), "mb": args.mb, "rows": rows, "command": " ".join(["python"] + sys.argv)}
    write_results("bench_docs.json", out)


if __name__ == "__main__":
    main()

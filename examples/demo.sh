#!/usr/bin/env bash
# The main job on a small real corpus: Python's own `email` and `json` packages (sources and
# docstrings, ~0.6 MB), indexed exactly and densely, then counted, found and queried.
set -euo pipefail
stdlib="$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
out="${1:-demo-index}"
rtv index "$stdlib/email" "$stdlib/json" -o "$out" --force
rtv info "$out" --json
rtv count "$out" "def " "import re" "Content-Type" --json
rtv find "$out" "def decode_header" --limit 3 --json
rtv cnf "$out" "import re" "def |class " --limit 3 --json
rtv query "$out" "parse an e-mail address into its name and address parts" -k 3 --mode dense --json
# hybrid (the default): dense + BM25 + exact phrase candidates, fused; reranked when a cross-encoder is on disk
rtv query "$out" 'split "From:" header into "display name" and address' -k 3

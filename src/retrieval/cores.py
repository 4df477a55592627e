"""The cores this process may run on: its CPU affinity (which taskset and cgroups narrow), not the
host's count. One place for every default thread or worker count (shard builds, the shard fan-out,
exported models, the text part's decompression, GPU embedding's tokenizers)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)

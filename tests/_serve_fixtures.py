"""Shared helpers for the `rtv serve` tests: a small corpus, and a real server in a subprocess.

The server is the real `rtv serve` command (uvicorn on 127.0.0.1, a free port it prints), so the
tests go through HTTP, the CLI and the library exactly as a user's requests do.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

DOCS = [
    ("cats", "The domestic cat is a small carnivorous mammal. People keep the cat as a pet at home."),
    ("dogs", "Dogs were the first species to be domesticated; people keep dogs as companions and guards."),
    ("backup", "A backup copy of the database is written to disk every night by the scheduler."),
    ("cron", "Nightly the cron job runs: write database backup to disk, then rotate the old logs."),
    ("rivers", "The Nile and the Amazon are the two longest rivers on Earth; the Nile flows north."),
    ("code", "Set ERR_CONN_RESET_42 when the peer closes the socket before the handshake ends."),
    ("sqlite", "SQLite stores a whole database in a single file on disk, and the file is portable."),
    ("ocean", "The Pacific is the largest and deepest of the Earth's oceans; the Atlantic is second."),
    ("cafe", "Un café au lait, s'il vous plaît: the naïve tourist ordered in the café near the Nile."),
    ("kanji", "日本語のテキストも索引に入る。東京と京都は日本の都市です。the cat sat."),
    ("fox", "the quick brown fox jumps over the lazy dog; the quick brown fox runs away from the dog."),
    ("pets", "Cats and dogs are the most popular pets; a pet needs food, water and a vet."),
]

URL_RE = re.compile(r"rtv serve: (http://\S+?)/ ")


def write_corpus(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t, "topic": i[:3]}) + "\n" for i, t in DOCS), encoding="utf-8")
    return path


def doc_bytes() -> list[bytes]:
    return [t.encode("utf-8") for _, t in DOCS]


class Server:
    """`rtv serve ARGS --port 0` in a subprocess; .url once it listens; stop() with SIGTERM."""

    def __init__(self, *args: str, timeout: float = 240.0, env: dict | None = None):
        cmd = [sys.executable, "-m", "rtv_cli.main", "serve", *args, "--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "RTV_SILENT": "0", **(env or {})})
        self.lines: list[str] = []
        self.url = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line)
                m = URL_RE.search(line)
                if m and self.url is None:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        ready.wait(timeout)
        if self.url is None:
            self.stop()
            raise RuntimeError("rtv serve did not start:\n" + "".join(self.lines))

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def wait_until(fn, timeout: float = 10.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > end:
            return value
        time.sleep(step)

"""A served index that follows its live generation (rtv add / delete / compact publish new ones).

    live = LiveIndex("docs", Index.open(path))
    idx = await live.acquire()     # in a request: the live generation's Index, leased to the request
    ...                            # every call of the request goes to this one Index
    # LeaseRelease (ASGI middleware) gives the lease back once the response has been sent

Each acquire reads NAME/CURRENT (a few bytes, no more than once per request). When it names
another generation, that generation is opened in a thread (one opening at a time; requests that
arrive meanwhile wait for it) and swapped in for new requests. The Index it replaces is closed when
its last lease is given back, so a request never sees a closed index or answers of two generations
(update.py keeps the previous generation on disk, and files it removes later stay readable through
the maps and SQLite connections an open Index holds; a dense part is opened ahead, with the index).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time

from ..errors import RtvError
from ..manifest import CURRENT

log = logging.getLogger("rtv.serve")
RETRY_S = 1.0  # after a failed opening, the next request tries again no sooner than this

# the leases of the request being handled (a list made by LeaseRelease); None outside a request
_LEASES: contextvars.ContextVar[list | None] = contextvars.ContextVar("rtv_serve_leases", default=None)


class LiveIndex:
    def __init__(self, name: str, index, device: str = "auto"):
        self.name = name
        self.path = index.path
        self.device = device
        self.current = index  # the newest opened generation; new requests get this one
        self._users: dict[int, int] = {}  # id(Index) -> leases held
        self._retired: dict[int, object] = {}  # replaced Indexes still leased: closed at their last release
        self._lock = threading.Lock()
        self._opening: asyncio.Future | None = None
        self._failed: tuple[str, float] | None = None  # (generation, when) of the last opening that failed

    @property
    def generation(self) -> str:
        return self.current.root.name

    def _live_name(self) -> str | None:
        try:
            return (self.path / CURRENT).read_text(encoding="utf-8").strip()
        except OSError:
            return None  # being replaced or unreadable: keep serving what is open

    async def acquire(self):
        """The Index of the live generation, leased to the current request (when there is one)."""
        name = self._live_name()
        if name and name != self.generation and not self._recently_failed(name):
            if self._opening is None:
                self._opening = asyncio.get_running_loop().run_in_executor(None, self._open, name)
                self._opening.add_done_callback(self._opened)
            with contextlib.suppress(Exception):  # a failure is logged; this request gets the one open
                await asyncio.shield(self._opening)
        idx = self.current
        leases = _LEASES.get()
        if leases is not None:
            with self._lock:
                self._users[id(idx)] = self._users.get(id(idx), 0) + 1
            leases.append((self, idx))
        return idx

    def _recently_failed(self, name: str) -> bool:
        return self._failed is not None and self._failed[0] == name and time.monotonic() - self._failed[1] < RETRY_S

    def _open(self, name: str):
        from .. import Index

        try:
            # the update that published it checked the files it wrote; sizes are still checked
            new = Index.open(self.path, verify=False, device=self.device)
        except Exception:
            self._failed = (name, time.monotonic())
            log.exception("%s: cannot open generation %s; still serving %s", self.name, name, self.generation)
            raise
        old = self.current
        if new.manifest.get("dense"):
            try:  # mapped now, in this thread, rather than by the first search (it opens lazily)
                dense = new.dense
                if old._dense is not None and old._dense._embedder is not None:
                    dense.embedder = old._dense._embedder  # the same model (checked): not loaded again
            except RtvError:
                log.warning("%s: %s: dense part not opened ahead; the first search opens it", self.name, name)
        return new

    def _opened(self, fut: asyncio.Future) -> None:
        """On the event loop: swap the new generation in; close the old one if nobody holds it."""
        self._opening = None
        if fut.cancelled() or fut.exception() is not None:
            return
        new, old = fut.result(), self.current
        if new.root == old.root:
            new.close()
            return
        self.current = new
        log.info("%s: now serving %s (was %s)", self.name, new.root.name, old.root.name)
        with self._lock:
            if self._users.get(id(old)):
                self._retired[id(old)] = old
                return
        old.close()

    def release(self, idx) -> None:
        with self._lock:
            left = self._users[id(idx)] - 1
            if left:
                self._users[id(idx)] = left
                return
            del self._users[id(idx)]
            done = self._retired.pop(id(idx), None)
        if done is not None:
            done.close()

    def close(self) -> None:
        with self._lock:
            indexes = [self.current, *self._retired.values()]
            self._retired.clear()
        for idx in indexes:
            with contextlib.suppress(Exception):
                idx.close()


class LeaseRelease:
    """ASGI middleware: gives back the index leases a request took, once its response (a streamed
    one included) has been sent or the request has failed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        leases: list = []
        token = _LEASES.set(leases)
        try:
            return await self.app(scope, receive, send)
        finally:
            _LEASES.reset(token)
            for live, idx in leases:
                live.release(idx)

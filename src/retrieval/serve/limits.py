"""The server's limits, and the 4xx JSON errors that name them.

Every refusal is a JSON object `{"error": {"type", "message", ...}}` with a 4xx status:
    limit            413 (body) or 422 (an argument over a limit); names `limit`, `value`, `max`
    invalid_argument 422; names `argument` (a field of the request, as FastAPI validated it)
    bad_request      400; the library refused the input (an InputError); its message as is
    unknown_index    404; names the indexes the server holds
    unauthorized     401; the bearer token is missing or wrong
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..options import MAX_QUERY_BYTES


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # a JSON request body
    max_upload_bytes: int = 16 << 20  # a benchmark file posted to /contamination
    max_pattern_bytes: int = MAX_QUERY_BYTES  # one count/find/cnf string (UTF-8 bytes)
    max_query_bytes: int = MAX_QUERY_BYTES  # one search query
    max_batch: int = 256  # strings, queries, documents or snippets in one batched request
    max_k: int = 1000  # search results per query
    max_depth: int = 2000  # candidates per stage (search depth)
    max_find_limit: int = 1000  # occurrences per find page
    max_cnf_limit: int = 100_000  # documents per cnf page
    max_context: int = 1000  # find snippet bytes on each side
    max_snippet_bytes: int = 65_536  # one snippet's width
    max_extract_bytes: int = 4 << 20  # one extracted document
    max_ngram_text_bytes: int = 65_536  # the text of an n-gram count request
    max_entries: int = 10_000  # benchmark entries in one contamination request

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class ApiError(Exception):
    """A refusal with its HTTP status and JSON body."""

    def __init__(self, status: int, type_: str, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "message": message, **extra}}


def over_limit(limits: Limits, name: str, value: int, what: str, status: int = 422) -> ApiError:
    cap = getattr(limits, name)
    return ApiError(status, "limit", f"{what}: {value} is above this server's limit {name}={cap}; ask for less",
                    limit=name, value=value, max=cap)


def check_max(limits: Limits, name: str, value: int, what: str) -> None:
    if value > getattr(limits, name):
        raise over_limit(limits, name, value, what)


def check_batch(limits: Limits, n: int, what: str) -> None:
    if n == 0:
        raise ApiError(422, "invalid_argument", f"{what}: an empty list; give at least one", argument=what)
    check_max(limits, "max_batch", n, f"{what} (batch size)")


def check_pattern(limits: Limits, s: str, what: str = "query", name: str = "max_pattern_bytes") -> None:
    size = len(s.encode("utf-8", "surrogatepass"))
    if size > getattr(limits, name):
        raise over_limit(limits, name, size, f"{what} (UTF-8 bytes)")

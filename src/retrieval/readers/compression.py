"""Opening a plain or compressed file (.gz, .zst/.zstd, .bz2, .xz) as one binary stream.

Every way a stream can fail is turned into one InputError line naming the file: a compressed
stream that ends before its end marker (a truncated download) is an error, not a short read, and
corrupt data gives "corrupt ... data", never a zlib/lzma/zstd traceback. So a reader built on
this stream can never return a silently partial file.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from pathlib import Path

import zstandard  # a core dependency, and small

from ..errors import InputError

# suffix -> the format's name in messages
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bzip2", ".xz": "xz"}
BUFFER_BYTES = 1 << 16
INPUT_BYTES = 1 << 16  # compressed bytes decompressed per call (zstd: bounds the call's output)
OUTPUT_BYTES = 1 << 20  # most bytes one zlib call returns
TRUNCATED = "truncated: the compressed stream ends early; re-download or re-compress it"


def compression_of(path: Path) -> str | None:
    """The compression suffix of a name like corpus.jsonl.zst (lower case), or None."""
    suffix = path.suffix.lower()
    return suffix if suffix in COMPRESSIONS else None


class _Members(io.RawIOBase):
    """Decompresses gzip members or zstd frames one after another, and knows whether the last
    one was complete: input that ends inside one raises EOFError, as bz2/lzma files do.

    Not gzip.GzipFile, which calls a file cut inside its 2-byte magic "not a gzipped file", nor
    zstandard's stream_reader, which ends a truncated frame with a short read and no error.
    """

    def __init__(self, raw, new_member, bounded: bool):
        self._raw = raw
        self._new_member = new_member  # -> a decompressobj: decompress(), eof, unused_data
        self._bounded = bounded  # zlib takes an output limit; zstandard does not
        self._member = None  # the current member (None before the first one)
        self._pending = b""  # input read but not decompressed yet
        self._out = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._out:
            if self._done:
                return 0
            data, self._pending = self._pending or self._raw.read(INPUT_BYTES), b""
            if not data:
                self._done = True
                if self._member is None or not self._member.eof:  # an empty file is no stream either
                    raise EOFError("the input ends inside a compressed member")
                return 0
            if self._member is None or self._member.eof:
                self._member = self._new_member()
            if self._bounded:
                self._out = memoryview(self._member.decompress(data, OUTPUT_BYTES))
                self._pending = self._member.unconsumed_tail
            else:
                self._out = memoryview(self._member.decompress(data))
            if self._member.eof:
                self._pending = self._member.unused_data  # the next member's start
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


# what the decompressors raise on bad data (a plain file's read errors are OSErrors too)
_STREAM_ERRORS = (OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


class _Checked(io.RawIOBase):
    """Passes reads through and turns each failure of the stream below into an InputError."""

    def __init__(self, path: Path, kind: str | None, inner):
        self._path = path
        self._kind = kind
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            return self._inner.readinto(b)
        except EOFError:
            raise InputError(f"{self._path}: {TRUNCATED}") from None
        except _STREAM_ERRORS as exc:
            if self._kind is None:
                raise InputError(f"{self._path}: cannot read ({exc}); check the file is complete and readable") from None
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"{self._path}: corrupt {self._kind} data ({detail}); re-download or re-compress it") from None

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


def open_binary(path: Path, compression: str | None = None) -> io.BufferedReader:
    """A buffered binary stream of the file's (decompressed) bytes; read errors are InputErrors.

    Works on pipes too: nothing seeks, and the files are opened unbuffered so that a read
    returns what a pipe holds rather than waiting for a full buffer. `compression` is a suffix of
    COMPRESSIONS or None.
    """
    kind = COMPRESSIONS[compression] if compression else None
    try:
        if kind is None:
            inner = open(path, "rb", buffering=0)
        elif kind == "gzip":  # wbits 31: a gzip wrapper, whose CRC-32 and length zlib checks
            inner = _Members(open(path, "rb", buffering=0), lambda: zlib.decompressobj(wbits=31), bounded=True)
        elif kind == "bzip2":
            inner = bz2.open(path, "rb")
        elif kind == "xz":
            inner = lzma.open(path, "rb")
        else:
            dctx = zstandard.ZstdDecompressor()
            inner = _Members(open(path, "rb", buffering=0), dctx.decompressobj, bounded=False)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); check the path and permissions") from None
    return io.BufferedReader(_Checked(path, kind, inner), BUFFER_BYTES)

"""Exact float16 search with torch, at the GPU's pace when the vectors fit in its memory.

The vectors are held as one float16 (n, d) tensor on the device. Queries go in tiles, and each
tile's top ``kc`` candidates (by float16 products, float32 accumulation) are found exactly one of
two ways:

- on CUDA with Triton (``gpu_fused.search_tile``): one kernel scores the tile and keeps only the
  best two columns of every block of FUSED_BLOCK vectors and the best of every FUSED_SUB blocks, so
  the (queries x n) score matrix is never written; a second kernel finds the top kc from those
  keys (exact: see ``gpu_fused.select``) and re-scores them, with no host sync in between;
- elsewhere (CPU, no Triton, small sets): the float16 score tile ``Q @ X^T`` and a two-level top-k,
  the maximum of each block of ``block`` columns, the ``kc`` best blocks, then an exact top-k over
  their columns. Exact: an element of the true top ``kc`` lies in a block whose maximum is at least
  its score, and if that block were not among the ``kc`` best, those ``kc`` blocks' maxima would
  be ``kc`` distinct elements ranked above it.

Ties go to the lower column (vector id) at every level (keys are (score, -id) pairs packed into one
integer), so the answer is deterministic.

The ``kc`` candidates (``kc = k + max(k, 8)`` by default: room for float16 rounding) are then
re-scored in float64 from the stored vectors and the best ``k`` returned by (score descending, id
ascending). With ``rescore_from="float32"`` (a float32 copy on the device too, 3x the memory; what
DenseIndex takes when it fits) the answer is exact search over the float32 vectors; with
"float16" it is exact over their float16 rounding.

Everything here runs on any torch device; ``device="cpu"`` runs the torch path (the tests use it).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from . import gpu_fused

DEFAULT_BLOCK = 512
# the fused kernel's blocks (the best two columns kept per block) and super-blocks (SUB blocks);
# an H200 sweep (eval/bench_gpu_search.py) ran 256-wide blocks faster than 128
FUSED_BLOCK = 256
FUSED_SUB = 2
FUSED_MAX_TILE = 16384  # queries a launch (their float16 rows, 12 MB at d=384, stay in L2)
# batches below this take the torch path even where the kernel runs; since the second stage runs in
# one kernel (gpu_fused.search_tile) the fused path leads at every batch size on the H200 at 1M x 384
# (batch 1: 0.2403 vs 1.4454 ms; 64: 204,806.7 vs 44,775.9 QPS; 16,384: 504,058.5 vs 344,682.3:
# eval/results/bench_gpu_search.json, "batches")
FUSED_MIN_QUERIES = 1
# the score tile (queries x n float16) is kept under this many bytes
DEFAULT_TILE_BYTES = 4 << 30


def _torch():
    from ..errors import require

    return require("torch", "dense")


# -- keys: (score, -column) packed in one integer, so top-k has no ties -----------------------------
def _ordered_int(vals):
    """Integers that sort like the floats ``vals`` (float16 -> int32 in the int16 range, float32 ->
    int64 in the int32 range). -0.0 counts as +0.0; NaN is not expected."""
    torch = _torch()
    vals = vals + 0.0  # -0.0 -> +0.0
    if vals.dtype == torch.float16:
        bits = vals.view(torch.int16).to(torch.int32)
        return torch.where(bits < 0, bits ^ 0x7FFF, bits)
    bits = vals.float().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def topk_first(vals, k: int, cols=None):
    """Top ``k`` of each row of ``vals`` (float16 / float32, (b, m)), ties to the lower column, sorted by
    (value descending, column ascending). ``cols`` ((b, m) int64, ascending along each row in the
    tie-breaking order; default: the column number) names each entry; returns (values, cols).
    """
    torch = _torch()
    b, m = vals.shape
    k = min(int(k), m)
    pos = torch.arange(m, device=vals.device)
    if vals.dtype == torch.float16 and m <= (1 << 16):
        # int16 bits that sort like the floats (-0.0 made +0.0 first), then (key16 << 16) + (65535 - pos)
        bits = (vals + 0.0).view(torch.int16)
        key16 = bits ^ ((bits >> 15) & 0x7FFF)
        key = torch.add(((1 << 16) - 1 - pos).to(torch.int32), key16, alpha=1 << 16)
    else:
        if m > (1 << 32):
            raise ValueError(f"topk_first: {m} columns is more than 2**32")
        key = (_ordered_int(vals.float()) << 32) | ((1 << 32) - 1 - pos)
    _, top = torch.topk(key, k, dim=1, largest=True, sorted=True)
    out_v = torch.gather(vals, 1, top)
    out_c = top if cols is None else torch.gather(cols, 1, top)
    return out_v, out_c


def block_maxima(scores, block: int):
    """(b, ceil(n / block)) maximum of each block of ``block`` columns of ``scores`` (b, n)."""
    torch = _torch()
    b, n = scores.shape
    full = n // block
    parts = []
    if full:
        parts.append(scores[:, :full * block].unflatten(1, (full, block)).amax(dim=2))
    if n - full * block:
        parts.append(scores[:, full * block:].amax(dim=1, keepdim=True))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _one_level(n: int, k: int, block: int) -> bool:
    """Whether the k best blocks would cover (almost) all n columns: then one top-k is cheaper."""
    return k * block >= n or -(-n // block) <= k


def _two_level_padded(scores, k: int, block: int):
    """``two_level_topk`` on scores whose width is a multiple of ``block``, padded with -inf."""
    torch = _torch()
    b, npad = scores.shape
    s3 = scores.view(b, npad // block, block)
    _, blk = topk_first(s3.amax(dim=2), k)            # (b, k) best blocks, ties to the lower block
    blk, _ = torch.sort(blk, dim=1)                    # ascending: candidate positions ascend by column
    rows = torch.arange(b, device=scores.device)[:, None]
    cand = s3[rows, blk].flatten(1)                    # (b, k * block), the chosen blocks' columns
    vals, pos = topk_first(cand, k)
    cols = torch.gather(blk, 1, torch.div(pos, block, rounding_mode="floor")) * block + pos % block
    return vals, cols


def two_level_topk(scores, k: int, block: int = DEFAULT_BLOCK):
    """Exact top ``k`` of each row of ``scores`` ((b, n), float16 or float32) in two levels: block
    maxima, the ``k`` best blocks, then the ``k * block`` columns of those blocks. Returns
    (values (b, min(k, n)), columns int64), sorted by (value descending, column ascending)."""
    torch = _torch()
    b, n = scores.shape
    k = min(int(k), n)
    block = max(1, int(block))
    if _one_level(n, k, block):
        return topk_first(scores, k)
    if n % block:  # a partial last block: pad it with -inf (GpuExact pads its vectors instead)
        pad = torch.full((b, block - n % block), float("-inf"), dtype=scores.dtype, device=scores.device)
        scores = torch.cat([scores, pad], dim=1)
    return _two_level_padded(scores.contiguous(), k, block)


def candidates_for(k: int, n: int, oversample: int | None = None) -> int:
    """How many float16 candidates are re-scored in float32 for a top ``k``: ``k + max(k, 8)`` by
    default (``oversample`` extra if given), at most n."""
    extra = max(k, 8) if oversample is None else max(0, int(oversample))
    return min(n, k + extra)


class GpuExact:
    """Exact search over float16 vectors held on a torch device (``"cuda"``, ``"cuda:1"``, ``"cpu"``).

    ``search(q, k)`` -> (scores float32 (nq, k), ids int64 (nq, k)), padded with -inf / -1 when
    k > n. ``rescore=False`` returns the float16 selection's own scores (as float32) instead of the
    float32 re-scoring of its candidates. ``rescore_from="float32"`` keeps a float32 copy of the
    vectors on the device too (3x the memory) and re-scores from it: the scores are then float32
    exact search's, and the answer differs from it only where the float16 selection ranks a true
    neighbour below ``kc`` candidates; with "float16" (the default) the vectors' own float16
    rounding can swap neighbours whose float32 scores are closer than it.
    """

    def __init__(self, vectors, device: str = "cuda", block: int = DEFAULT_BLOCK,
                 tile_bytes: int = DEFAULT_TILE_BYTES, oversample: int | None = None,
                 rescore_from: str = "float16", fused: bool | str = True):
        torch = _torch()
        # True: the Triton kernel where it can run; False: the torch path everywhere; "reference":
        # the kernel's torch stand-in on any device (gpu_fused.block_keys_reference; for tests)
        if fused not in (True, False, "reference"):
            raise ValueError(f"fused={fused!r}: True, False or 'reference'")
        self.fused = fused
        self.fused_block, self.fused_sub = FUSED_BLOCK, FUSED_SUB
        if rescore_from not in ("float16", "float32"):
            raise ValueError(f"rescore_from={rescore_from!r}: float16 or float32")
        self.device = torch.device(device)
        self.rescore_from = rescore_from
        self.x32 = None
        if isinstance(vectors, np.ndarray):
            if vectors.ndim != 2:
                raise ValueError(f"vectors must be (n, d), got shape {vectors.shape}")
            x = torch.empty(vectors.shape, dtype=torch.float16, device=self.device)
            if rescore_from == "float32":
                self.x32 = torch.empty(vectors.shape, dtype=torch.float32, device=self.device)
            step = max(1, (256 << 20) // max(1, vectors.shape[1] * 4))  # bounded host temporaries
            for lo in range(0, len(vectors), step):
                chunk = torch.from_numpy(np.ascontiguousarray(vectors[lo:lo + step], dtype=np.float32)).to(self.device)
                x[lo:lo + step] = chunk.to(torch.float16)
                if self.x32 is not None:
                    self.x32[lo:lo + step] = chunk
        else:
            x = vectors.to(self.device, dtype=torch.float16).contiguous()
            if rescore_from == "float32":
                self.x32 = vectors.to(self.device, dtype=torch.float32).contiguous()
        self.n, self.dim = int(x.shape[0]), int(x.shape[1])
        self.block = max(1, int(block))
        # stored with zero rows up to a multiple of the block width, so that each tile's scores are
        # (b, nb * block): the padded columns are set to -inf and every block is whole
        npad = -(-self.n // self.block) * self.block
        if npad != self.n:
            xp = torch.zeros((npad, self.dim), dtype=torch.float16, device=self.device)
            xp[:self.n] = x
            del x
            x = xp[:self.n]
        self.x = x
        self.xp = x if npad == self.n else xp
        self.npad = npad
        self.tile_bytes = int(tile_bytes)
        self.oversample = oversample

    @property
    def nbytes(self) -> int:
        """Bytes of vectors held on the device (float16, plus float32 for rescore_from="float32")."""
        return self.n * self.dim * (6 if self.x32 is not None else 2)

    def tile_rows(self, nq: int) -> int:
        """Queries per tile: the float16 score tile stays under ``tile_bytes``."""
        return max(1, min(nq, self.tile_bytes // max(1, self.npad * 2)))

    def fused_ok(self, kc: int, nq: int | None = None) -> bool:
        """Whether a search of ``nq`` queries for ``kc`` candidates takes the fused kernel
        (gpu_fused): on CUDA with Triton, from FUSED_MIN_QUERIES queries (None: any batch), and with
        at least ``kc`` super-blocks (smaller sets: the torch path is as fast); "reference" always."""
        if -(-self.n // (self.fused_block * self.fused_sub)) < kc:
            return False
        if self.fused == "reference":
            return True
        return bool(self.fused) and gpu_fused.available(self.device) and (nq is None or nq >= FUSED_MIN_QUERIES)

    def fused_tile_rows(self, nq: int) -> int:
        """Queries per fused launch: its two (b, blocks) int64 key arrays stay under ``tile_bytes``."""
        nblk = -(-self.n // (self.fused_block * self.fused_sub)) * self.fused_sub
        return max(1, min(nq, FUSED_MAX_TILE, self.tile_bytes // max(1, nblk * 16)))

    def _select_fused(self, q16, kc: int, allowed):
        """(scores float32, ids int64) of the exact top ``kc`` by float16 products (the kernel's)."""
        bn, sub = self.fused_block, self.fused_sub

        def rescan(rows, top):
            return gpu_fused.rescan_blocks(q16, self.x, rows, top, bn, allowed)

        keys = gpu_fused.block_keys_reference if self.fused == "reference" else gpu_fused.block_keys
        sk, k1, k2 = keys(q16, self.x, bn, sub, allowed)
        top = gpu_fused.select(sk, k1, k2, kc, bn, sub, rescan)
        del sk, k1, k2
        none = top == gpu_fused.SENTINEL
        ids = gpu_fused.key_columns(top).masked_fill(none, -1)
        return gpu_fused.key_scores(top).masked_fill(none, float("-inf")), ids

    def _select_torch(self, q16, kc: int, allowed):
        """The same from a float16 score tile and the two-level top-k (any torch device)."""
        torch = _torch()
        one = _one_level(self.n, kc, self.block)
        scores = q16 @ (self.x if one else self.xp).t()    # (b, n or npad) float16, float32 accumulation
        if allowed is not None:
            scores[:, :self.n].masked_fill_(~allowed[None, :], float("-inf"))
        if one:
            vals, ids = topk_first(scores, kc)
        else:
            if self.npad != self.n:
                scores[:, self.n:] = float("-inf")
            vals, ids = _two_level_padded(scores, kc, self.block)
        del scores
        vals = vals.float()
        return vals, ids.masked_fill(vals == float("-inf"), -1)

    def rescore(self, q, ids, k: int):
        """The best ``k`` of candidates ``ids`` ((b, kc), -1 for none) for float32 queries ``q``,
        re-scored in float64 from the stored vectors (the float32 copy when there is one), ranked by
        (score descending, id ascending): (scores float32 (b, k), ids)."""
        torch = _torch()
        x = self.x32 if self.x32 is not None else self.x
        valid = ids >= 0
        s = (x[ids.clamp(min=0)].double() * q.double()[:, None, :]).sum(dim=2)  # (b, kc)
        s = s.masked_fill(~valid, float("-inf"))
        # each candidate's rank: how many beat it by (score, then lower id; none: by position);
        # a few (b, kc, kc) comparisons instead of two sorts
        kc = ids.shape[1]
        tie = torch.where(valid, ids, self.n + torch.arange(kc, device=ids.device))
        beats = (s[:, :, None] > s[:, None, :]) | ((s[:, :, None] == s[:, None, :]) & (tie[:, :, None] < tie[:, None, :]))
        rank = beats.sum(dim=1)                                                  # a permutation of 0..kc-1
        out_s = torch.empty_like(s).scatter_(1, rank, s)
        out_i = torch.empty_like(ids).scatter_(1, rank, ids)
        return out_s[:, :k].float(), out_i[:, :k]

    def search_tensor(self, q, k: int, rescore: bool = True, allowed=None):
        """``search`` on a float32 (nq, d) tensor on the device; returns tensors on the device
        (scores (nq, min(k, n)) float32, ids int64, -1 / -inf where fewer are allowed). ``allowed``:
        a bool (n,) tensor on the device, False for vectors that must not be returned."""
        torch = _torch()
        nq = int(q.shape[0])
        k = min(int(k), self.n)
        kc = candidates_for(k, self.n, self.oversample) if rescore else k
        out_s = torch.empty((nq, k), dtype=torch.float32, device=self.device)
        out_i = torch.empty((nq, k), dtype=torch.int64, device=self.device)
        fused = self.fused_ok(kc, nq)
        per = self.fused_tile_rows(nq) if fused else self.tile_rows(nq)
        if allowed is not None:
            allowed = torch.as_tensor(allowed, dtype=torch.bool, device=self.device)
            if allowed.shape != (self.n,):
                raise ValueError(f"allowed has shape {tuple(allowed.shape)}; want ({self.n},)")
        with torch.inference_mode():
            for lo in range(0, nq, per):
                qt = q[lo:lo + per]
                q16 = qt.to(torch.float16).contiguous()
                if fused and self.fused is True:  # Triton: block keys, then selection + re-scoring
                    x = self.x32 if self.x32 is not None else self.x
                    vals, ids = gpu_fused.search_tile(qt.float().contiguous(), q16, self.x, x, k, kc,
                                                      self.fused_block, self.fused_sub, allowed, rescore)
                else:
                    vals, ids = (self._select_fused if fused else self._select_torch)(q16, kc, allowed)
                    if rescore:
                        vals, ids = self.rescore(qt.float(), ids, k)
                if per >= nq:  # one tile: its answer as it is
                    return vals[:, :k], ids[:, :k]
                out_s[lo:lo + per] = vals[:, :k]
                out_i[lo:lo + per] = ids[:, :k]
        return out_s, out_i

    def search(self, q: np.ndarray, k: int, rescore: bool = True, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of float32 queries (nq, d) (or one (d,) query) as numpy arrays (scores float32,
        ids int64), padded with -inf / -1; ``allowed``: bool (n,), False for vectors never returned."""
        torch = _torch()
        q = np.ascontiguousarray(q, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query vectors have shape {q.shape}; want (n, {self.dim})")
        k = int(k)
        out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        if len(q) == 0 or self.n == 0:
            return out_s, out_i
        if allowed is not None:
            allowed = torch.from_numpy(np.ascontiguousarray(allowed, dtype=bool)).to(self.device)
        s, i = self.search_tensor(torch.from_numpy(q).to(self.device), k, rescore, allowed)
        out_s[:, :s.shape[1]] = s.cpu().numpy()
        out_i[:, :i.shape[1]] = i.cpu().numpy()
        return out_s, out_i

    def __repr__(self) -> str:
        return (f"GpuExact(n={self.n}, dim={self.dim}, device={str(self.device)!r}, block={self.block}, "
                f"rescore_from={self.rescore_from!r}, fused={self.fused_ok(20)})")


# -- choosing it ------------------------------------------------------------------------------------
def cuda_device(device: str) -> str | None:
    """The torch CUDA device ``device`` ("auto", "cuda", "cuda:N") stands for, when torch sees one."""
    device = (device or "auto").lower()
    if device == "cpu":
        return None
    if device == "auto" and "torch" not in sys.modules and not _nvidia_gpu_present():
        return None  # importing torch to learn there is no GPU costs seconds of a CPU machine's cold start
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return "cuda" if device == "auto" else device


def _nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver shows a GPU this process may use (a cheap look at /proc and /dev, no
    import): false means torch would find no CUDA device either."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    try:
        if any(os.scandir("/proc/driver/nvidia/gpus")):
            return True
    except OSError:
        pass
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


def fits(n: int, dim: int, device: str, tile_bytes: int = DEFAULT_TILE_BYTES,
         bytes_per_value: int = 2) -> tuple[bool, str]:
    """Whether n x dim vectors of ``bytes_per_value`` (2: float16; 6: float16 + a float32 copy) plus
    a score tile fit in the device's free memory: (ok, why)."""
    need = n * dim * bytes_per_value
    what = "float16" if bytes_per_value == 2 else "float16 + float32"
    torch = _torch()
    if torch.device(device).type != "cuda":
        return True, f"{need / 2**20:.0f} MiB of {what} vectors on {device}"
    free, total = torch.cuda.mem_get_info(torch.device(device))
    # the score tile (at most tile_bytes, or one query row) and the selection's temporaries
    work = min(tile_bytes, max(n * 2, 1)) * 2 + (256 << 20)
    name = torch.cuda.get_device_name(torch.device(device))
    ok = need + work <= 0.9 * free
    why = (f"{need / 2**30:.2f} GiB of {what} vectors (+{work / 2**30:.2f} GiB working space) "
           f"{'fit in' if ok else 'do not fit in'} {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB on {name}")
    return ok, why

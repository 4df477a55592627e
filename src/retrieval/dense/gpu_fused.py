"""The fused scoring kernel of the GPU exact search (Triton): ``Q @ X^T`` and the block selection in
one pass, so the (queries x n) score matrix never reaches device memory.

Each program scores ``BM`` queries against ``SUB`` consecutive blocks of ``BN`` vectors (float16
inputs, float32 accumulation) and keeps, for every query and block, the best two (score, column)
pairs, and for every super-block of ``SUB`` blocks the best one. A pair is stored as one int64 key,
``ordered(score) << 32 | (2**32 - 1 - column)``: keys sort like (score descending, column
ascending), so every top-k below has no ties and the answer is deterministic.

``select`` then finds the top ``kc`` columns exactly from these keys (see its docstring for why it
is exact), rescanning whole blocks only for the rare query where two of its top ``kc`` fall in one
block. ``block_keys_reference`` computes the kernel's output with plain torch (any device): the
oracle the kernel is tested against, and the CPU path of the same selection.

On CUDA, ``search_tile`` runs the whole search of a tile of queries in two launches and no host
sync: the kernel above, then ``select_rescore`` (one program a query: ``select`` with its rescan,
and the float64 re-scoring of GpuExact.rescore, on the kernel's keys), so a search costs the same
few launches at any batch size; the torch versions of both stages are its oracle.

Triton is imported lazily; ``available()`` says whether the kernel can run on a device.
"""

from __future__ import annotations

import functools

SENTINEL = -(1 << 63)  # the key of "no column here": a masked or out-of-range column; below every score
LOW = (1 << 32) - 1


def _torch():
    from ..errors import require

    return require("torch", "dense")


@functools.lru_cache(maxsize=1)
def _triton():
    """(triton, triton.language) or None when Triton is not installed."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return triton, tl


def available(device) -> bool:
    """Whether the fused kernel can run on torch device ``device``: a CUDA device and Triton."""
    torch = _torch()
    return torch.device(device).type == "cuda" and _triton() is not None


# -- keys -------------------------------------------------------------------------------------------
def keys_of(scores, cols):
    """int64 keys of float32 ``scores`` at int64 ``cols`` (same shape): ordered like (score
    descending, column ascending); -0.0 counts as +0.0."""
    torch = _torch()
    bits = scores.float().contiguous().view(torch.int32)
    o = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    o = torch.where(scores == 0, torch.zeros_like(o), o)
    return (o.to(torch.int64) << 32) | (LOW - cols)


def key_columns(keys):
    """The columns of int64 ``keys`` (a sentinel gives 2**32 - 1, never a real column)."""
    return LOW - (keys & LOW)


def key_scores(keys):
    """The float32 scores of int64 ``keys`` (a sentinel gives a large negative number, not -inf)."""
    torch = _torch()
    o = (keys >> 32).to(torch.int32)
    return (o ^ ((o >> 31) & 0x7FFFFFFF)).view(torch.float32)


# -- the kernel's output, in plain torch ------------------------------------------------------------
def block_keys_reference(q16, x16, bn: int, sub: int, allowed=None):
    """What ``block_keys`` computes, with torch: for float16 queries (b, d) and vectors (n, d),
    (super (b, nsb), first (b, nsb * sub), second (b, nsb * sub)) int64 keys: the best two columns
    of each block of ``bn`` vectors and the best column of each super-block of ``sub`` blocks.
    Columns past n, or False in ``allowed`` (bool (n,)), are sentinels."""
    torch = _torch()
    b, n = q16.shape[0], x16.shape[0]
    nsb = -(-n // (bn * sub))
    width = nsb * sub * bn
    s = q16.float() @ x16.float().t()  # float16 products are exact in float32
    cols = torch.arange(width, device=q16.device)
    keys = torch.full((b, width), SENTINEL, dtype=torch.int64, device=q16.device)
    keys[:, :n] = keys_of(s, cols[:n].expand(b, n))
    if allowed is not None:
        keys[:, :n][:, ~allowed] = SENTINEL
    k3 = keys.view(b, nsb * sub, bn)
    first = k3.amax(dim=2)
    second = torch.where(k3 == first[:, :, None], SENTINEL, k3).amax(dim=2)
    return first.view(b, nsb, sub).amax(dim=2), first, second


# -- the kernel -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _kernel():
    from .gpu_fused_kernels import block_keys_kernel

    return block_keys_kernel


# tile shapes by batch size: small batches take short query tiles (fewer wasted rows); PIPE: the
# inner loop pipelined by Triton (else unrolled)
BIG_BATCH_CONFIG = {"BM": 128, "num_warps": 8, "num_stages": 3, "PIPE": True}


def config_for(nq: int) -> dict:
    if nq <= 16:
        return {"BM": 16, "num_warps": 4, "num_stages": 3, "PIPE": True}
    if nq <= 32:
        return {"BM": 32, "num_warps": 4, "num_stages": 3, "PIPE": True}
    if nq <= 64:
        return {"BM": 64, "num_warps": 4, "num_stages": 3, "PIPE": True}
    return dict(BIG_BATCH_CONFIG)


def block_keys(q16, x16, bn: int, sub: int, allowed=None, top2: bool = True, config: dict | None = None):
    """``block_keys_reference`` through the Triton kernel (CUDA tensors; contiguous float16).
    ``top2=False`` skips the second-best keys (then ``second`` is not written: for timing only)."""
    torch = _torch()
    b, d = q16.shape
    n = x16.shape[0]
    nsb = -(-n // (bn * sub))
    nblk = nsb * sub
    dev = q16.device
    sk = torch.empty((b, nsb), dtype=torch.int64, device=dev)
    k1 = torch.empty((b, nblk), dtype=torch.int64, device=dev)
    k2 = torch.empty((b, nblk), dtype=torch.int64, device=dev) if top2 else k1
    cfg = dict(config_for(b) if config is None else config)
    bm = cfg.pop("BM")
    pipe = cfg.pop("PIPE", True)
    bk = cfg.pop("BK", 64 if d % 64 == 0 or d > 64 else max(16, 1 << (max(d, 16) - 1).bit_length()))
    allow = allowed.to(torch.int8) if allowed is not None else q16  # unused when not MASKED
    grid = (triton_cdiv(b, bm) * nsb,)
    _kernel()[grid](q16, x16, allow, sk, k1, k2, b, n, nblk, nsb, D=d, BM=bm, BN=bn, BK=bk, SUB=sub,
                    TOP2=top2, MASKED=allowed is not None, PIPE=pipe, **cfg)
    return sk, k1, k2


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


# -- the exact top kc from the keys -----------------------------------------------------------------
def select(sk, k1, k2, kc: int, bn: int, sub: int, rescan):
    """The exact top ``kc`` keys of each query from the block keys ((b, kc) int64, descending).

    Why exact, with T the true top kc of a query's row: (1) a column of T lies in one of the kc best
    super-blocks (else kc super-blocks' maxima, kc distinct columns, would rank above it); (2) the
    kc best of the two best columns of each of those super-blocks' blocks (C) then hold T, unless a
    block holds three or more columns of T; (3) such a block's best two are then both among C's top
    kc (every column C ranks above them, the whole row ranks above them too). So: where no block has
    two columns among C's top kc, that top kc is T; where one has, T lies in C's top kc and the
    columns of the blocks holding two of them: ``rescan(rows, top)`` ((r,) query rows, their (r, kc)
    keys) scores those blocks in full and returns the rows' new top kc keys.
    """
    torch = _torch()
    b = sk.shape[0]
    dev = sk.device
    ksb = min(kc, sk.shape[1])
    sb = torch.topk(sk, ksb, dim=1, sorted=False).indices                      # (b, ksb)
    blk = (sb[:, :, None] * sub + torch.arange(sub, device=dev)).flatten(1)   # (b, ksb * sub)
    cand = torch.cat([torch.gather(k1, 1, blk), torch.gather(k2, 1, blk)], dim=1)
    top = torch.topk(cand, min(kc, cand.shape[1]), dim=1).values               # (b, kc) descending
    blocks = torch.div(key_columns(top), bn, rounding_mode="floor")
    sb_sorted = torch.sort(blocks, dim=1).values
    two = (sb_sorted[:, 1:] == sb_sorted[:, :-1]) & (sb_sorted[:, 1:] < (LOW // bn))
    rows = torch.nonzero(two.any(dim=1)).flatten()
    if len(rows):
        top[rows] = rescan(rows, top[rows])
    return top


def rescan_blocks(q16, x16, rows, top, bn: int, allowed=None, chunk_bytes: int = 256 << 20):
    """The new top keys of queries ``rows`` of ``q16`` (``select``'s rescan): their keys ``top``
    ((r, kc)) less those in blocks holding two or more of them, and every column of those blocks,
    scored in float32 from the float16 values (the kernel's products)."""
    torch = _torch()
    n, d = x16.shape
    kc = top.shape[1]
    dev = q16.device
    blocks = torch.div(key_columns(top), bn, rounding_mode="floor")
    same = blocks[:, :, None] == blocks[:, None, :]                          # (r, kc, kc)
    dup = (same.sum(dim=2) >= 2) & (blocks < LOW // bn)
    earlier = torch.tril(torch.ones(kc, kc, dtype=torch.bool, device=dev), diagonal=-1)
    first = dup & ~(same & earlier).any(dim=2)                               # one entry per such block
    m = max(1, int(first.sum(dim=1).max()))
    grow = torch.sort(torch.where(first, blocks, torch.full_like(blocks, -1)), dim=1, descending=True).values[:, :m]
    kept = top.masked_fill(dup, SENTINEL)
    per = max(1, chunk_bytes // (m * bn * d * 6))
    out = []
    for lo in range(0, len(rows), per):
        g = grow[lo:lo + per]
        cols = (g[:, :, None] * bn + torch.arange(bn, device=dev)).flatten(1)  # (r, m * bn)
        ok = (g >= 0)[:, :, None].expand(-1, -1, bn).flatten(1) & (cols < n)
        safe = torch.where(ok, cols, torch.zeros_like(cols))
        if allowed is not None:
            ok &= allowed[safe]
        s = torch.bmm(x16[safe].float(), q16[rows[lo:lo + per]].float()[:, :, None]).squeeze(2)
        keys = torch.where(ok, keys_of(s, safe), torch.full_like(safe, SENTINEL))
        union = torch.cat([kept[lo:lo + per], keys], dim=1)
        out.append(torch.topk(union, kc, dim=1).values)
    return torch.cat(out)


# -- the second stage on CUDA: selection, rescan and re-scoring in one kernel -----------------------
@functools.lru_cache(maxsize=1)
def _second_stage():
    from .gpu_fused_kernels import select_rescore_kernel

    return select_rescore_kernel


def _pow2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def select_rescore(sk, k1, k2, q32, q16, x16, xr, kc: int, k: int, bn: int, sub: int, allowed=None,
                   rescore: bool = True, chunk: int = 2048):
    """``select`` (its rescan included) and GpuExact.rescore in one Triton launch, one program a
    query, on the keys ``block_keys(q16, x16, bn, sub, allowed)`` gave. ``q32`` / ``q16``: the
    queries (b, d) in float32 and float16; ``xr``: the vectors re-scored from ((n, d) float32 or
    float16); ``chunk``: super-block keys read a step (a power of two). Returns (top (b, kc) int64
    keys, descending; flag (b,) int32: 1 where two of them shared a block and the row was rescanned;
    scores (b, k) float32 and ids (b, k) int64 of the re-scored best k, -inf / -1 where none; None,
    None without ``rescore``)."""
    torch = _torch()
    b, nsb = sk.shape
    if nsb < kc:
        raise ValueError(f"select_rescore: {nsb} super-blocks, fewer than kc={kc}")
    n, d = xr.shape
    dev = sk.device
    top = torch.empty((b, kc), dtype=torch.int64, device=dev)
    flag = torch.empty((b,), dtype=torch.int32, device=dev)
    out_s = torch.empty((b, k), dtype=torch.float32, device=dev) if rescore else top
    out_i = torch.empty((b, k), dtype=torch.int64, device=dev) if rescore else top
    allow = allowed.to(torch.int8) if allowed is not None else flag  # unused when not MASKED
    _second_stage()[(b,)](sk, k1, k2, q32, q16, x16, xr, allow, top, flag, out_s, out_i, nsb, k1.shape[1], n,
                          D=d, BD=min(128, max(16, _pow2(d))), KC=kc, KC_P=max(16, _pow2(kc)), K=k, SUB=sub,
                          SUB_P=_pow2(sub), BN=bn, CH=min(chunk, max(16, _pow2(nsb))),
                          MASKED=allowed is not None, RESCORE=rescore, num_warps=4)
    return top, flag, (out_s if rescore else None), (out_i if rescore else None)


def search_tile(q32, q16, x16, xr, k: int, kc: int, bn: int, sub: int, allowed=None, rescore: bool = True):
    """The best ``k`` of ``kc`` exact float16 candidates of each query of one tile in two Triton
    launches and no host sync: ``q32`` / ``q16`` the queries in float32 and float16 (contiguous),
    ``x16`` the float16 vectors, ``xr`` those re-scored from (float32 or float16). Returns (scores
    float32 (b, k), ids int64 (b, k)), -inf / -1 where none: re-scored in float64 like
    GpuExact.rescore, or with ``rescore=False`` (then kc == k) the float16 products themselves."""
    torch = _torch()
    allow = allowed.to(torch.int8) if allowed is not None else None
    sk, k1, k2 = block_keys(q16, x16, bn, sub, allow)
    top, _, s, i = select_rescore(sk, k1, k2, q32, q16, x16, xr, kc, k, bn, sub, allow, rescore)
    if rescore:
        return s, i
    none = top == SENTINEL
    return key_scores(top).masked_fill(none, float("-inf")), key_columns(top).masked_fill(none, -1)

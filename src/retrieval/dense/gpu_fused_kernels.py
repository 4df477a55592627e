"""The Triton kernels of gpu_fused (imported only when one runs: importing Triton takes time).
``gpu_fused`` holds what they compute, how their output is used, and their torch stand-in."""

import triton
import triton.language as tl


@triton.jit
def score_tile(q_ptr, x_ptr, rm, rn, row_ok, col_ok, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, PIPE: tl.constexpr):
    """(BM, BN) float32 scores of queries rm against vectors rn (float16 products)."""
    rk = tl.arange(0, BK)
    # element offsets in int64: n * D passes 2**31 from 5.6M vectors of 384 dims (int32 offsets
    # wrapped there: the first 10M run read the wrong rows)
    qrow = rm.to(tl.int64) * D
    xrow = rn.to(tl.int64) * D
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    if PIPE:  # a loop Triton software-pipelines (loads of the next steps in flight)
        for k0 in range(0, D, BK):
            kk = k0 + rk
            a = tl.load(q_ptr + qrow[:, None] + kk[None, :], mask=row_ok[:, None] & (kk[None, :] < D), other=0.0)
            bt = tl.load(x_ptr + xrow[None, :] + kk[:, None], mask=col_ok[None, :] & (kk[:, None] < D), other=0.0)
            acc = tl.dot(a, bt, acc)
    else:
        for k0 in tl.static_range(0, D, BK):
            kk = k0 + rk
            a = tl.load(q_ptr + qrow[:, None] + kk[None, :], mask=row_ok[:, None] & (kk[None, :] < D), other=0.0)
            bt = tl.load(x_ptr + xrow[None, :] + kk[:, None], mask=col_ok[None, :] & (kk[:, None] < D), other=0.0)
            acc = tl.dot(a, bt, acc)
    return acc


# sizes are not specialised on (Triton would compile another variant for 1, for multiples of 16 and
# for the rest: seconds of compiling at the first query of each kind of batch; they only bound masks
# and scale row offsets here, nothing that vectorises)
SIZES_NOT_SPECIALISED = ("nq", "n", "nblk", "nsb")


@triton.jit(do_not_specialize=SIZES_NOT_SPECIALISED)
def block_keys_kernel(q_ptr, x_ptr, allow_ptr, sk_ptr, k1_ptr, k2_ptr, nq, n, nblk, nsb,
                      D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                      SUB: tl.constexpr, TOP2: tl.constexpr, MASKED: tl.constexpr, PIPE: tl.constexpr):
    # the query tiles of one super-block run next to each other (query tile fastest): the
    # super-block's vectors are read from device memory once and then come from L2
    pid = tl.program_id(0)
    num_m = tl.cdiv(nq, BM)
    pid_m = pid % num_m
    pid_s = pid // num_m
    rm = pid_m * BM + tl.arange(0, BM)
    row_ok = rm < nq
    best = tl.full((BM,), -9223372036854775807 - 1, tl.int64)
    for j in tl.static_range(SUB):
        blk = pid_s * SUB + j
        rn = blk * BN + tl.arange(0, BN)
        col_ok = rn < n
        if MASKED:
            col_ok = col_ok & (tl.load(allow_ptr + rn, mask=col_ok, other=0) != 0)
        acc = score_tile(q_ptr, x_ptr, rm, rn, row_ok, col_ok, D, BM, BN, BK, PIPE)
        if MASKED:
            acc = tl.where(col_ok[None, :], acc, float("-inf"))
        elif blk * BN + BN > n:  # only the last, partial block has columns past n (a pass saved)
            acc = tl.where(col_ok[None, :], acc, float("-inf"))
        # best column: the highest score, the lowest column among equal scores (-0.0 == +0.0)
        m1 = tl.max(acc, axis=1)
        a1 = tl.min(tl.where(acc == m1[:, None], rn[None, :], 2147483647), axis=1)
        ok1 = a1 < n
        if MASKED:
            ok1 = ok1 & (m1 != float("-inf"))
        b1 = m1.to(tl.int32, bitcast=True)
        o1 = tl.where(m1 == 0.0, 0, b1 ^ ((b1 >> 31) & 0x7FFFFFFF))
        key1 = tl.where(ok1, (o1.to(tl.int64) << 32) | (4294967295 - a1.to(tl.int64)), -9223372036854775807 - 1)
        best = tl.maximum(best, key1)
        tl.store(k1_ptr + rm.to(tl.int64) * nblk + blk, key1, mask=row_ok)
        if TOP2:
            acc2 = tl.where(rn[None, :] == a1[:, None], float("-inf"), acc)
            m2 = tl.max(acc2, axis=1)
            # a1 itself is -inf in acc2: it can equal m2 only when m2 is -inf, and then key2 is a sentinel
            a2 = tl.min(tl.where(acc2 == m2[:, None], rn[None, :], 2147483647), axis=1)
            ok2 = (a2 < n) & (m2 != float("-inf"))
            b2 = m2.to(tl.int32, bitcast=True)
            o2 = tl.where(m2 == 0.0, 0, b2 ^ ((b2 >> 31) & 0x7FFFFFFF))
            key2 = tl.where(ok2, (o2.to(tl.int64) << 32) | (4294967295 - a2.to(tl.int64)), -9223372036854775807 - 1)
            tl.store(k2_ptr + rm.to(tl.int64) * nblk + blk, key2, mask=row_ok)
    tl.store(sk_ptr + rm.to(tl.int64) * nsb + pid_s, best, mask=row_ok)


# -- the second stage: select (gpu_fused.select) and re-score, one program a query ------------------
SENTINEL_KEY = tl.constexpr(-9223372036854775807 - 1)  # gpu_fused.SENTINEL
LOW32 = tl.constexpr(4294967295)  # gpu_fused.LOW


@triton.jit
def rescore_row(row, top, kpos, q_ptr, x_ptr, s_ptr, i_ptr, n, D: tl.constexpr, BD: tl.constexpr,
                KC: tl.constexpr, KC_P: tl.constexpr, K: tl.constexpr):
    """Re-scores one query's candidate keys ``top`` ((KC_P,) int64, sentinels where none; ``kpos``
    their positions) in float64 from the vectors at ``x_ptr`` (float32 or float16 rows) and stores
    the best K by (score descending, id ascending; none: by position) as float32 scores and ids
    (-inf / -1 where none), like GpuExact.rescore."""
    col = LOW32 - (top & LOW32)
    valid = (top != SENTINEL_KEY) & (kpos < KC) & (col < n)
    ids = tl.where(valid, col, 0)
    qbase = row.to(tl.int64) * D
    acc = tl.zeros((KC_P,), dtype=tl.float64)
    for d0 in tl.static_range(0, D, BD):
        dd = d0 + tl.arange(0, BD)
        dok = dd < D
        qv = tl.load(q_ptr + qbase + dd, mask=dok, other=0.0).to(tl.float64)
        xv = tl.load(x_ptr + ids[:, None] * D + dd[None, :], mask=valid[:, None] & dok[None, :], other=0.0)
        acc += tl.sum(xv.to(tl.float64) * qv[None, :], axis=1)
    s = tl.where(valid, acc, float("-inf"))
    tie = tl.where(valid, ids, n + kpos)
    # each candidate's rank: how many beat it (rows j beat column i)
    beats = (s[:, None] > s[None, :]) | ((s[:, None] == s[None, :]) & (tie[:, None] < tie[None, :]))
    rank = tl.sum(beats.to(tl.int32), axis=0)
    out = row.to(tl.int64) * K + rank
    keep = (rank < K) & (kpos < KC)
    tl.store(s_ptr + out, s.to(tl.float32), mask=keep)
    tl.store(i_ptr + out, tl.where(valid, ids, -1), mask=keep)


@triton.jit
def rescan_row(row, top, kpos, q16_ptr, x16_ptr, allow_ptr, n, D: tl.constexpr, BD: tl.constexpr,
               BN: tl.constexpr, KC: tl.constexpr, KC_P: tl.constexpr, MASKED: tl.constexpr):
    """gpu_fused.rescan_blocks for one query: its top keys less those in blocks holding two or more
    of them, merged with every column of those blocks scored from the float16 values; the new
    top KC keys, descending."""
    okt = (top != SENTINEL_KEY) & (kpos < KC)
    bt = tl.where(okt, (LOW32 - (top & LOW32)) // BN, -1)
    same = (bt[:, None] == bt[None, :]) & okt[:, None] & okt[None, :]
    dup = okt & (tl.sum(same.to(tl.int32), axis=1) >= 2)
    first = dup & (tl.sum((same & (kpos[None, :] < kpos[:, None])).to(tl.int32), axis=1) == 0)
    kept = tl.where(dup, SENTINEL_KEY, top)
    left = tl.where(first, bt, -1)
    qbase = row.to(tl.int64) * D
    for _ in range(tl.sum(first.to(tl.int32), axis=0)):
        b = tl.max(left, axis=0)
        left = tl.where(left == b, -1, left)
        cols = b * BN + tl.arange(0, BN)
        cok = cols < n
        if MASKED:
            cok = cok & (tl.load(allow_ptr + cols, mask=cok, other=0) != 0)
        acc = tl.zeros((BN,), dtype=tl.float32)
        for d0 in tl.static_range(0, D, BD):
            dd = d0 + tl.arange(0, BD)
            dok = dd < D
            qv = tl.load(q16_ptr + qbase + dd, mask=dok, other=0.0).to(tl.float32)
            xv = tl.load(x16_ptr + cols[:, None] * D + dd[None, :], mask=cok[:, None] & dok[None, :], other=0.0)
            acc += tl.sum(xv.to(tl.float32) * qv[None, :], axis=1)
        bits = acc.to(tl.int32, bitcast=True)
        o = tl.where(acc == 0.0, 0, bits ^ ((bits >> 31) & 0x7FFFFFFF))
        keys = tl.where(cok, (o.to(tl.int64) << 32) | (LOW32 - cols), SENTINEL_KEY)
        merged = tl.full((KC_P,), SENTINEL_KEY, tl.int64)
        for i in range(KC):
            m = tl.maximum(tl.max(kept, axis=0), tl.max(keys, axis=0))
            merged = tl.where(kpos == i, m, merged)
            kept = tl.where(kept == m, SENTINEL_KEY, kept)
            keys = tl.where(keys == m, SENTINEL_KEY, keys)
        kept = merged
    return kept


@triton.jit(do_not_specialize=SIZES_NOT_SPECIALISED[1:])
def select_rescore_kernel(sk_ptr, k1_ptr, k2_ptr, q_ptr, q16_ptr, x16_ptr, x_ptr, allow_ptr, top_ptr, flag_ptr,
                          s_ptr, i_ptr, nsb, nblk, n, D: tl.constexpr, BD: tl.constexpr, KC: tl.constexpr,
                          KC_P: tl.constexpr, K: tl.constexpr, SUB: tl.constexpr, SUB_P: tl.constexpr,
                          BN: tl.constexpr, CH: tl.constexpr, MASKED: tl.constexpr, RESCORE: tl.constexpr):
    row = tl.program_id(0)
    kpos = tl.arange(0, KC_P)
    # (1) the KC best super-blocks (their keys and numbers), streaming over chunks of CH: each new
    # key above the smallest kept replaces it; padded slots hold the largest key, never replaced
    best = tl.where(kpos < KC, SENTINEL_KEY, 9223372036854775807)
    bidx = tl.zeros((KC_P,), dtype=tl.int64)
    srow = row.to(tl.int64) * nsb
    for c0 in range(0, nsb, CH):
        cc = c0 + tl.arange(0, CH)
        s = tl.load(sk_ptr + srow + cc, mask=cc < nsb, other=SENTINEL_KEY)
        cnt = tl.minimum(tl.sum((s > tl.min(best, axis=0)).to(tl.int32), axis=0), KC)
        for _ in range(cnt):
            m = tl.max(s, axis=0)
            im = tl.min(tl.where(s == m, cc, 2147483647), axis=0)
            bmin = tl.min(best, axis=0)
            pos = tl.min(tl.where(best == bmin, kpos, KC_P), axis=0)
            put = (kpos == pos) & (m > bmin)
            best = tl.where(put, m, best)
            bidx = tl.where(put, im.to(tl.int64), bidx)
            s = tl.where(cc == im, SENTINEL_KEY, s)
    # (2) their blocks' best two keys; (3) the KC best of those, descending
    okb = (kpos < KC) & (best != SENTINEL_KEY)
    j = tl.arange(0, SUB_P)
    blk = bidx[:, None] * SUB + j[None, :]
    okc = okb[:, None] & (j[None, :] < SUB)
    crow = row.to(tl.int64) * nblk
    c1 = tl.load(k1_ptr + crow + blk, mask=okc, other=SENTINEL_KEY)
    c2 = tl.load(k2_ptr + crow + blk, mask=okc, other=SENTINEL_KEY)
    top = tl.full((KC_P,), SENTINEL_KEY, tl.int64)
    for i in range(KC):
        m = tl.maximum(tl.max(tl.max(c1, axis=1), axis=0), tl.max(tl.max(c2, axis=1), axis=0))
        top = tl.where(kpos == i, m, top)
        c1 = tl.where(c1 == m, SENTINEL_KEY, c1)
        c2 = tl.where(c2 == m, SENTINEL_KEY, c2)
    # (4) where two of them share a block, that block's third best may belong too: rescan it
    okt = (top != SENTINEL_KEY) & (kpos < KC)
    bt = (LOW32 - (top & LOW32)) // BN
    same = (bt[:, None] == bt[None, :]) & (kpos[:, None] < kpos[None, :]) & okt[:, None] & okt[None, :]
    flag = tl.max(tl.max(same.to(tl.int32), axis=1), axis=0)
    tl.store(flag_ptr + row, flag)
    if flag != 0:
        top = rescan_row(row, top, kpos, q16_ptr, x16_ptr, allow_ptr, n, D, BD, BN, KC, KC_P, MASKED)
    tl.store(top_ptr + row.to(tl.int64) * KC + kpos, top, mask=kpos < KC)
    if RESCORE:
        rescore_row(row, top, kpos, q_ptr, x_ptr, s_ptr, i_ptr, n, D, BD, KC, KC_P, K)

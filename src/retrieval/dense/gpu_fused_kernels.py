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


@triton.jit
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
            a2 = tl.min(tl.where((acc2 == m2[:, None]) & (rn[None, :] != a1[:, None]), rn[None, :], 2147483647), axis=1)
            ok2 = (a2 < n) & (m2 != float("-inf"))
            b2 = m2.to(tl.int32, bitcast=True)
            o2 = tl.where(m2 == 0.0, 0, b2 ^ ((b2 >> 31) & 0x7FFFFFFF))
            key2 = tl.where(ok2, (o2.to(tl.int64) << 32) | (4294967295 - a2.to(tl.int64)), -9223372036854775807 - 1)
            tl.store(k2_ptr + rm.to(tl.int64) * nblk + blk, key2, mask=row_ok)
    tl.store(sk_ptr + rm.to(tl.int64) * nsb + pid_s, best, mask=row_ok)

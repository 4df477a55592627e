// Word-level bit helpers shared by the bitvectors.
#pragma once
#include <cstdint>
#if defined(__BMI2__)
#include <immintrin.h>
#endif

namespace rtv {

inline unsigned popcount64(uint64_t w) { return static_cast<unsigned>(__builtin_popcountll(w)); }

// Asks for the cache line holding p (never faults, whatever p is). An asm statement rather than
// __builtin_prefetch: GCC 12 deleted the latter from rank walks (a helper that only prefetches
// counts as free of side effects, so its calls went), which cost the count path its overlap.
inline void prefetch_line(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 (%0)" : : "r"(p));
#else
  __builtin_prefetch(p);
#endif
}

// Position of the k-th (0-based) set bit of w; w must have more than k set bits.
inline unsigned select_in_word(uint64_t w, unsigned k) {
#if defined(__BMI2__)
  return static_cast<unsigned>(__builtin_ctzll(_pdep_u64(uint64_t{1} << k, w)));
#else
  unsigned base = 0;
  for (;;) {
    unsigned c = popcount64(w & 0xFF);
    if (k < c) break;
    k -= c;
    w >>= 8;
    base += 8;
  }
  for (; k > 0; --k) w &= w - 1;
  return base + static_cast<unsigned>(__builtin_ctzll(w));
#endif
}

}  // namespace rtv

// Compressed bitvector with rank, for the wavelet-tree levels of a BWT.
//
// BWT bitvectors alternate long runs (where one context predicts the next byte) with noisy
// stretches, so each 512-bit block takes the cheapest of: all zeros / all ones (no payload),
// run lengths in nibbles (1..15 in one nibble, else an escape nibble + 12 bits), or plain bits.
// A 32-bit directory entry per block (type, payload offset and ones relative to a 64 Kibit
// superblock) plus one payload block keeps a rank to ~one cache miss.
#pragma once
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

#include "bits.hpp"
#include "serial.hpp"

namespace rtv {

class HybridBitvector {
 public:
  // bits: LSB-first words holding nbits bits (words past nbits may be absent).
  static void write(Writer& out, const std::vector<uint64_t>& bits, uint64_t nbits);
  void load(Reader& in);

  uint64_t size() const { return size_; }
  uint64_t rank1(uint64_t i) const {
    bool bit;
    return access_rank(i, bit);
  }
  // Prefetch hints for interleaved searches: first the directory entry (and superblock) of bit
  // i, later, once that entry is likely cached, the payload lines a rank at i will read.
  void prefetch_directory(uint64_t i) const {
    prefetch_line(directory_ + i / kBlockBits);
    prefetch_line(supers_ + i / kBlockBits / kBlocksPerSuper);
  }
  void prefetch_payload(uint64_t i) const {
    if (i > size_) return;  // a damaged rank: access_rank reports it
    const uint64_t block = i / kBlockBits;
    const uint32_t entry = directory_[block];
    if ((entry & 3) < kPlain) return;  // all-zeros / all-ones blocks have no payload
    const uint8_t* p = payload_ + supers_[block / kBlocksPerSuper].offset + ((entry >> 2) & 0x3FFF);
    prefetch_line(p);
    prefetch_line(p + kBlockBits / 8 - 1);  // a payload of up to 64 bytes may span two lines
  }
  static constexpr uint64_t kBlockBits = 512;
  // Bounds of rank1(i), i <= size(), from a table of counts kept in memory (one per kGroupBits,
  // built on load from the directory) without reading the directory: lower <= rank1(i) <= upper,
  // upper - lower < kGroupBits. A rank walk bounds where all its levels will rank with these, so
  // it can ask for all their directory lines before the first one has arrived.
  // 4 Kibit (8 blocks; 2 bytes of memory per 4 Kibit): a level's window then spans about one
  // directory line rather than four (counts on 200 MB of text ~7% faster than with 32 Kibit).
  static constexpr uint64_t kGroupBits = 4096;
  void rank_bounds(uint64_t i, uint64_t& lower, uint64_t& upper) const {
    const uint64_t g = i / kGroupBits;
    lower = supers_[g / kGroupsPerSuper].ones + group_ones_[g];
    upper = lower + i % kGroupBits;
  }
  // Bounds of rank1(i), i <= size(), from bit i's directory entry alone (what a rank walk can know
  // once its directory lines have arrived, before any payload): exact in an all-zeros or all-ones
  // block, else [ones before the block, that + i % kBlockBits].
  void directory_bounds(uint64_t i, uint64_t& lower, uint64_t& upper) const {
    const uint64_t block = i / kBlockBits;
    const uint32_t entry = directory_[block];
    lower = supers_[block / kBlocksPerSuper].ones + (entry >> 16);
    upper = lower + ((entry & 3) == kZeros ? 0 : i % kBlockBits);
    if ((entry & 3) == kOnes) lower = upper;
  }
  // Prefetches the payload lines of the blocks holding bits [i, j], j <= size() (the first
  // kMaxLines): payloads are laid out in block order, so they are one byte range.
  void prefetch_payload_range(uint64_t i, uint64_t j) const {
    if (i > j || j > size_) return;
    const uint64_t bi = i / kBlockBits, bj = j / kBlockBits;
    const uint32_t last_entry = directory_[bj];
    if (bi == bj && (last_entry & 3) < kPlain) return;  // no payload
    const uint8_t* first = payload_ + supers_[bi / kBlocksPerSuper].offset + ((directory_[bi] >> 2) & 0x3FFF);
    const uint8_t* last = payload_ + supers_[bj / kBlocksPerSuper].offset + ((last_entry >> 2) & 0x3FFF) + kBlockBits / 8 - 1;
    prefetch_lines(first, last);
  }
  // Prefetches the directory lines of the blocks holding bits [i, j] (the first kMaxLines).
  void prefetch_directory_range(uint64_t i, uint64_t j) const {
    if (i > j || i > size_) return;
    const auto* first = reinterpret_cast<const uint8_t*>(directory_ + i / kBlockBits);
    const auto* last = reinterpret_cast<const uint8_t*>(directory_ + std::min(j, size_) / kBlockBits);
    prefetch_lines(first, last);
  }
  // Prefetches the cache lines of bytes [first, last]: the first kMaxLines of them, and the line
  // holding `last` when the range is longer (both range prefetches above).
  static void prefetch_lines(const uint8_t* first, const uint8_t* last) {
    constexpr uint64_t kMaxLines = 8;
    for (uint64_t k = 0; k < kMaxLines && first + 64 * k <= last; ++k) prefetch_line(first + 64 * k);
    if (first + 64 * kMaxLines > last) prefetch_line(last);  // a range ending in the next line
  }
  // Returns rank1(i) (ones in [0, i)) and stores bit i into bit (0 when i == size).
  // Positions past size() (only a damaged file's ranks lead there) raise FormatError.
  uint64_t access_rank(uint64_t i, bool& bit) const {
    if (__builtin_expect(i > size_, 0)) corrupt("bitvector position out of range");
    const uint64_t block = i / kBlockBits;
    const uint32_t off = static_cast<uint32_t>(i % kBlockBits);
    const uint32_t entry = directory_[block];
    const Super& sup = supers_[block / kBlocksPerSuper];
    const uint64_t base = sup.ones + (entry >> 16);
    switch (entry & 3) {
      case kZeros:
        bit = false;
        return base;
      case kOnes:
        bit = true;
        return base + off;
      case kPlain:
        return base + plain_rank(payload_ + sup.offset + ((entry >> 2) & 0x3FFF), off, bit);
      default: {
        const uint64_t at = sup.offset + ((entry >> 2) & 0x3FFF);  // < payload_bytes_ (checked on load)
        return base + runs_rank(payload_ + at, off, bit, static_cast<uint32_t>(std::min<uint64_t>(payload_bytes_ - at, kRunsReach)));
      }
    }
  }
  // rank1(i) and rank1(j), i <= j: when both fall in one block (a narrow suffix-array range),
  // its directory entry is read once and a runs payload decoded once, up to j.
  void rank1_pair(uint64_t i, uint64_t j, uint64_t& rank_i, uint64_t& rank_j) const {
    const uint64_t block = i / kBlockBits;
    if (block != j / kBlockBits || __builtin_expect(j > size_ || i > j, 0)) {  // rank1 reports damage
      rank_i = rank1(i);
      rank_j = rank1(j);
      return;
    }
    const auto off_i = static_cast<uint32_t>(i % kBlockBits), off_j = static_cast<uint32_t>(j % kBlockBits);
    const uint32_t entry = directory_[block];
    const Super& sup = supers_[block / kBlocksPerSuper];
    const uint64_t base = sup.ones + (entry >> 16);
    bool bit;
    switch (entry & 3) {
      case kZeros:
        rank_i = rank_j = base;
        return;
      case kOnes:
        rank_i = base + off_i;
        rank_j = base + off_j;
        return;
      case kPlain: {
        const uint8_t* p = payload_ + sup.offset + ((entry >> 2) & 0x3FFF);
        rank_i = base + plain_rank(p, off_i, bit);
        rank_j = base + plain_rank(p, off_j, bit);
        return;
      }
      default: {
        const uint64_t at = sup.offset + ((entry >> 2) & 0x3FFF);  // < payload_bytes_ (checked on load)
        RunsCursor runs(payload_ + at, static_cast<uint32_t>(std::min<uint64_t>(payload_bytes_ - at, kRunsReach)));
        rank_i = base + runs.rank(off_i, bit);
        rank_j = base + runs.rank(off_j, bit);
      }
    }
  }

 private:
  enum : uint32_t { kZeros = 0, kOnes = 1, kPlain = 2, kRuns = 3 };
  static constexpr uint64_t kBlocksPerSuper = 128;
  static constexpr uint64_t kGroupsPerSuper = kBlocksPerSuper * kBlockBits / kGroupBits;
  static_assert(kGroupBits % kBlockBits == 0 && kGroupsPerSuper >= 1, "groups split superblocks into whole blocks");
  struct Super {
    uint64_t ones;    // ones before the superblock
    uint64_t offset;  // payload byte offset of its first block
  };

  static uint32_t plain_rank(const uint8_t* p, uint32_t off, bool& bit) {
    uint32_t ones = 0;
    uint64_t w;
    const uint32_t word = off / 64;
    for (uint32_t k = 0; k < word; ++k) {
      std::memcpy(&w, p + 8 * k, 8);
      ones += popcount64(w);
    }
    std::memcpy(&w, p + 8 * word, 8);
    bit = (w >> (off & 63)) & 1;
    return ones + popcount64(w & ((uint64_t{1} << (off & 63)) - 1));
  }
  // A runs payload is < kBlockBits / 8 bytes and is followed by another payload or the 16 padding
  // bytes, so decoding a sound block never reads kRunsReach bytes past its start.
  static constexpr uint64_t kRunsReach = kBlockBits / 8 + 16;
  // Decodes a runs payload from the block start, for ranks at non-decreasing offsets. A word
  // whose 16 nibbles are all single-nibble runs ending before off is skipped with two byte-sum
  // multiplies; the run holding off is found 8 runs at a time (group_rank). avail: bytes readable
  // from the payload's start (at most kRunsReach); a damaged block that would decode past them
  // raises FormatError instead of reading on.
  class RunsCursor {
   public:
    RunsCursor(const uint8_t* p, uint32_t avail) : p_(p), avail_(avail) {}
    // Ones before off in the block and the bit at off; off at least the previous call's.
    // Runs go 8 nibbles at a time without a branch per run: byte-wise prefix sums (multiplies)
    // give the ends of the group's even and odd runs, and a bytewise compare with off counts the
    // runs that end at or before it (see group_rank); an escape (a 0 nibble, then 12 bits of
    // length) is decoded on its own.
    uint32_t rank(uint32_t off, bool& bit) {
      constexpr uint64_t kLowNibbles = 0x0F0F0F0F0F0F0F0Full, kBytes = 0x0101010101010101ull;
      for (;;) {
        if (__builtin_expect((nib_ >> 1) + 8 > avail_, 0)) corrupt("bitvector runs overrun their block");
        uint64_t w;
        std::memcpy(&w, p_ + (nib_ >> 1), 8);
        if ((nib_ & 1) == 0 && ((w - 0x1111111111111111ull) & ~w & 0x8888888888888888ull) == 0) {
          const auto even = static_cast<uint32_t>(((w & kLowNibbles) * kBytes) >> 56);  // runs of bit b
          const auto odd = static_cast<uint32_t>((((w >> 4) & kLowNibbles) * kBytes) >> 56);
          if (pos_ + even + odd <= off) {  // 16 runs, no escape, all before off
            pos_ += even + odd;
            ones_ += b_ ? even : odd;
            nib_ += 16;
            continue;
          }
        }
        w >>= (nib_ & 1) * 4;  // nibble 0 of w is nibble nib_ (15 or 16 of them are the payload's)
        const auto g = static_cast<uint32_t>(w);
        const uint32_t z = (g - 0x11111111u) & ~g & 0x88888888u;  // its lowest flag marks the first 0 nibble
        const uint32_t e = z ? static_cast<uint32_t>(__builtin_ctz(z)) / 4 : 8;  // runs before an escape
        if (e > 0 && group_rank(e == 8 ? g : g & ((1u << (4 * e)) - 1), e, off)) {
          bit = b_;
          return b_ ? ones_ + (off - pos_) : ones_;
        }
        if (e == 8) continue;
        const auto len = static_cast<uint32_t>(w >> (4 * e + 4)) & 0xFFF;  // the escape at nibble nib_
        if (pos_ + len > off) {
          bit = b_;
          return b_ ? ones_ + (off - pos_) : ones_;
        }
        pos_ += len;
        ones_ += b_ ? len : 0;
        b_ ^= 1;
        nib_ += 4;
      }
    }

   private:
    // Moves the cursor over the runs of `chunk` (its first e nibbles, each a run of 1-15 bits,
    // the rest 0) that end at or before off; true when one of them holds off (the cursor then
    // stands at that run). Byte k of pe / po is the length of runs 0, 2, .., 2k / 1, 3, .., 2k + 1
    // together (<= 60 each), so run 2k ends at pe_k + po_(k-1) and run 2k + 1 at pe_k + po_k, all
    // <= 120: a byte-wise (t + 128 - end) keeps its top bit exactly when end <= t, and never borrows.
    bool group_rank(uint32_t chunk, uint32_t e, uint32_t off) {
      const uint32_t pe = (chunk & 0x0F0F0F0Fu) * 0x01010101u;
      const uint32_t po = ((chunk >> 4) & 0x0F0F0F0Fu) * 0x01010101u;
      const uint32_t se = pe >> 24, so = po >> 24, t = off - pos_;
      if (se + so <= t) {
        pos_ += se + so;
        ones_ += b_ ? se : so;
        b_ ^= e & 1;
        nib_ += e;
        return false;
      }
      // runs past e are empty and end at se + so > t, so they are not counted
      const uint64_t ends = static_cast<uint64_t>(pe + (po << 8)) | static_cast<uint64_t>(pe + po) << 32;
      const uint64_t le = ((t * 0x0101010101010101ull) | 0x8080808080808080ull) - ends;
      const uint32_t j = popcount64(le & 0x8080808080808080ull);  // the run holding off
      const uint32_t qe = (j + 1) / 2, qo = j / 2;  // even and odd runs before it
      const uint32_t sum_e = qe ? (pe >> (8 * (qe - 1))) & 0xFF : 0, sum_o = qo ? (po >> (8 * (qo - 1))) & 0xFF : 0;
      pos_ += sum_e + sum_o;
      ones_ += b_ ? sum_e : sum_o;
      b_ ^= j & 1;
      nib_ += j;
      return true;
    }
    const uint8_t* p_;
    uint32_t avail_, pos_ = 0, ones_ = 0, nib_ = 0, b_ = 0;  // runs decoded so far end at bit pos_
  };
  static uint32_t runs_rank(const uint8_t* p, uint32_t off, bool& bit, uint32_t avail) {
    return RunsCursor(p, avail).rank(off, bit);
  }

  std::vector<uint16_t> group_ones_;  // per kGroupBits: ones before it within its superblock
  uint64_t size_ = 0;
  const uint32_t* directory_ = nullptr;
  const Super* supers_ = nullptr;
  const uint8_t* payload_ = nullptr;
  uint64_t payload_bytes_ = 0;
};

}  // namespace rtv

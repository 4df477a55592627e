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
    __builtin_prefetch(directory_ + i / kBlockBits);
    __builtin_prefetch(supers_ + i / kBlockBits / kBlocksPerSuper);
  }
  void prefetch_payload(uint64_t i) const {
    if (i > size_) return;  // a damaged rank: access_rank reports it
    const uint64_t block = i / kBlockBits;
    const uint32_t entry = directory_[block];
    if ((entry & 3) < kPlain) return;  // all-zeros / all-ones blocks have no payload
    const uint8_t* p = payload_ + supers_[block / kBlocksPerSuper].offset + ((entry >> 2) & 0x3FFF);
    __builtin_prefetch(p);
    __builtin_prefetch(p + kBlockBits / 8 - 1);  // a payload of up to 64 bytes may span two lines
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

 private:
  enum : uint32_t { kZeros = 0, kOnes = 1, kPlain = 2, kRuns = 3 };
  static constexpr uint64_t kBlockBits = 512;
  static constexpr uint64_t kBlocksPerSuper = 128;
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
  // Decodes runs from the block start; while at a word boundary of the payload, a word whose 16
  // nibbles are all single-nibble runs ending before off is skipped with two byte-sum multiplies.
  // avail: bytes readable from p (at most kRunsReach); a damaged block that would decode past
  // them raises FormatError instead of reading on.
  static uint32_t runs_rank(const uint8_t* p, uint32_t off, bool& bit, uint32_t avail) {
    constexpr uint64_t kLowNibbles = 0x0F0F0F0F0F0F0F0Full, kBytes = 0x0101010101010101ull;
    uint32_t pos = 0, ones = 0, nib = 0, b = 0;
    auto next = [&]() { const uint32_t v = (p[nib >> 1] >> ((nib & 1) * 4)) & 15; ++nib; return v; };
    for (;;) {
      if (__builtin_expect((nib >> 1) + 8 > avail, 0)) corrupt("bitvector runs overrun their block");
      if ((nib & 15) == 0) {
        uint64_t w;
        std::memcpy(&w, p + (nib >> 1), 8);
        const bool has_escape = ((w - 0x1111111111111111ull) & ~w & 0x8888888888888888ull) != 0;
        if (!has_escape) {
          const auto even = static_cast<uint32_t>(((w & kLowNibbles) * kBytes) >> 56);  // runs of bit b
          const auto odd = static_cast<uint32_t>((((w >> 4) & kLowNibbles) * kBytes) >> 56);
          if (pos + even + odd <= off) {
            pos += even + odd;
            ones += b ? even : odd;
            nib += 16;
            continue;
          }
        }
      }
      uint32_t len = next();
      if (len == 0) {
        len = next();
        len |= next() << 4;
        len |= next() << 8;
      }
      if (pos + len > off) {
        bit = b;
        return b ? ones + (off - pos) : ones;
      }
      pos += len;
      ones += b ? len : 0;
      b ^= 1;
    }
  }

  uint64_t size_ = 0;
  const uint32_t* directory_ = nullptr;
  const Super* supers_ = nullptr;
  const uint8_t* payload_ = nullptr;
  uint64_t payload_bytes_ = 0;
};

}  // namespace rtv

// Bitvector with rank support, stored so that a rank touches one 64-byte line:
// each line holds the count of ones before it followed by 448 data bits.
#pragma once
#include <cstdint>
#include <vector>

#include "bits.hpp"
#include "serial.hpp"

namespace rtv {

class RankBitvector {
 public:
  // bits: LSB-first words holding nbits bits.
  static void write(Writer& out, const std::vector<uint64_t>& bits, uint64_t nbits);
  void load(Reader& in);

  uint64_t size() const { return size_; }
  uint64_t rank1(uint64_t i) const {  // ones in [0, i)
    const uint64_t* line = lines_ + (i / kBitsPerLine) * kWordsPerLine;
    const uint64_t off = i % kBitsPerLine;
    uint64_t r = line[0];
    const uint64_t word = off / 64;
    for (uint64_t w = 0; w < word; ++w) r += popcount64(line[1 + w]);
    return r + popcount64(line[1 + word] & ((uint64_t{1} << (off & 63)) - 1));
  }
  // Bit i, with rank1(i) stored into rank.
  bool access_rank(uint64_t i, uint64_t& rank) const {
    const uint64_t* line = lines_ + (i / kBitsPerLine) * kWordsPerLine;
    const uint64_t off = i % kBitsPerLine;
    uint64_t r = line[0];
    const uint64_t word = off / 64;
    for (uint64_t w = 0; w < word; ++w) r += popcount64(line[1 + w]);
    const uint64_t bits = line[1 + word];
    rank = r + popcount64(bits & ((uint64_t{1} << (off & 63)) - 1));
    return (bits >> (off & 63)) & 1;
  }

 private:
  static constexpr uint64_t kWordsPerLine = 8;
  static constexpr uint64_t kBitsPerLine = 448;
  const uint64_t* lines_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace rtv

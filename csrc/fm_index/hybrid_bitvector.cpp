#include "hybrid_bitvector.hpp"

#include <algorithm>

namespace rtv {
namespace {

// Nibble run-length code of one block; runs alternate starting with zeros.
std::vector<uint8_t> encode_runs(const uint64_t* words, uint64_t nbits) {
  std::vector<uint8_t> nibbles;
  auto put = [&](uint32_t len) {
    if (len >= 1 && len <= 15) {
      nibbles.push_back(static_cast<uint8_t>(len));
    } else {
      nibbles.push_back(0);
      nibbles.push_back(len & 15);
      nibbles.push_back((len >> 4) & 15);
      nibbles.push_back((len >> 8) & 15);
    }
  };
  uint32_t b = 0, run = 0;
  for (uint64_t i = 0; i < nbits; ++i) {
    const uint32_t bit = (words[i / 64] >> (i % 64)) & 1;
    if (bit != b) {
      put(run);
      run = 0;
      b = bit;
    }
    ++run;
  }
  put(run);
  std::vector<uint8_t> out((nibbles.size() + 1) / 2, 0);
  for (size_t k = 0; k < nibbles.size(); ++k) out[k / 2] |= nibbles[k] << ((k & 1) * 4);
  return out;
}

}  // namespace

void HybridBitvector::write(Writer& out, const std::vector<uint64_t>& bits, uint64_t nbits) {
  // One block more than needed, so rank1(nbits) has a directory entry.
  const uint64_t n_blocks = nbits / kBlockBits + 1;
  std::vector<uint32_t> directory(n_blocks);
  std::vector<Super> supers;
  std::vector<uint8_t> payload;
  uint64_t ones = 0, super_ones = 0, super_offset = 0;
  for (uint64_t blk = 0; blk < n_blocks; ++blk) {
    if (blk % kBlocksPerSuper == 0) {
      super_ones = ones;
      super_offset = payload.size();
      supers.push_back({ones, super_offset});
    }
    uint64_t words[kBlockBits / 64] = {};
    const uint64_t first = blk * kBlockBits;
    for (uint64_t k = 0; k < kBlockBits / 64; ++k) {
      const uint64_t w = first / 64 + k;
      if (w < bits.size() && first + 64 * k < nbits) words[k] = bits[w];
    }
    const uint64_t valid = std::min<uint64_t>(kBlockBits, nbits - std::min(nbits, first));
    if (valid < kBlockBits) {  // clear bits past the end
      for (uint64_t k = 0; k < kBlockBits / 64; ++k) {
        const uint64_t lo = 64 * k;
        if (lo >= valid) words[k] = 0;
        else if (valid - lo < 64) words[k] &= (uint64_t{1} << (valid - lo)) - 1;
      }
    }
    uint32_t block_ones = 0;
    for (uint64_t w : words) block_ones += popcount64(w);

    uint32_t type;
    const uint64_t rel_offset = payload.size() - super_offset;
    if (block_ones == 0) {
      type = kZeros;
    } else if (block_ones == kBlockBits) {
      type = kOnes;
    } else {
      std::vector<uint8_t> runs = encode_runs(words, kBlockBits);
      if (runs.size() < kBlockBits / 8) {
        type = kRuns;
        payload.insert(payload.end(), runs.begin(), runs.end());
      } else {
        type = kPlain;
        const auto* b = reinterpret_cast<const uint8_t*>(words);
        payload.insert(payload.end(), b, b + kBlockBits / 8);
      }
    }
    directory[blk] = type | static_cast<uint32_t>(rel_offset << 2) | static_cast<uint32_t>((ones - super_ones) << 16);
    ones += block_ones;
  }
  payload.resize(payload.size() + 16, 0);  // reads may load a full word past a payload's end
  out.put_u64(nbits);
  out.put_vector(directory);
  out.put_array(reinterpret_cast<const uint64_t*>(supers.data()), supers.size() * 2);
  out.put_vector(payload);
}

void HybridBitvector::load(Reader& in) {
  size_ = in.get_u64();
  const uint64_t n_blocks = size_ / kBlockBits + 1;
  directory_ = in.get_array_of<uint32_t>(n_blocks);
  const uint64_t n_supers = (n_blocks + kBlocksPerSuper - 1) / kBlocksPerSuper;
  supers_ = reinterpret_cast<const Super*>(in.get_array_of<uint64_t>(2 * n_supers));
  uint64_t payload_bytes;
  payload_ = in.get_array<uint8_t>(payload_bytes);
  payload_bytes_ = payload_bytes;
  for (uint64_t s = 0; s < n_supers; ++s)
    if (supers_[s].offset > payload_bytes) in.fail("bitvector superblock offset out of range");
  // Bound every payload offset once so a damaged, unverified file cannot read far outside the
  // map (the body checksum is what guarantees integrity).
  for (uint64_t b = 0; b < n_blocks; ++b) {
    const uint32_t type = directory_[b] & 3;
    const uint64_t off = supers_[b / kBlocksPerSuper].offset + ((directory_[b] >> 2) & 0x3FFF);
    if ((type == kPlain && off + kBlockBits / 8 > payload_bytes) || (type == kRuns && off >= payload_bytes))
      in.fail("bitvector payload out of range");
  }
  // A group's count is its first block's (relative to the same superblock: groups split
  // superblocks). Only a prefetch hint: a damaged count misdirects prefetches, never a rank.
  constexpr uint64_t kBlocksPerGroup = kGroupBits / kBlockBits;
  group_ones_.resize(size_ / kGroupBits + 1);
  for (uint64_t g = 0; g < group_ones_.size(); ++g)
    group_ones_[g] = static_cast<uint16_t>(directory_[g * kBlocksPerGroup] >> 16);
}

}  // namespace rtv

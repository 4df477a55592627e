#include "bitvector.hpp"

namespace rtv {

void RankBitvector::write(Writer& out, const std::vector<uint64_t>& bits, uint64_t nbits) {
  // One extra line so rank1(size) stays inside the array.
  const uint64_t n_lines = nbits / kBitsPerLine + 1;
  std::vector<uint64_t> lines(n_lines * kWordsPerLine, 0);
  auto get_bit = [&](uint64_t i) { return (bits[i >> 6] >> (i & 63)) & 1; };
  uint64_t ones = 0;
  for (uint64_t l = 0; l < n_lines; ++l) {
    uint64_t* line = &lines[l * kWordsPerLine];
    line[0] = ones;
    const uint64_t begin = l * kBitsPerLine;
    for (uint64_t j = 0; j < kBitsPerLine && begin + j < nbits; ++j) {
      if (get_bit(begin + j)) {
        line[1 + j / 64] |= uint64_t{1} << (j & 63);
        ++ones;
      }
    }
  }
  out.put_u64(nbits);
  out.put_vector(lines);
}

void RankBitvector::load(Reader& in) {
  size_ = in.get_u64();
  uint64_t n_words;
  lines_ = in.get_array<uint64_t>(n_words);
  if (n_words != (size_ / kBitsPerLine + 1) * kWordsPerLine) in.fail("bitvector has the wrong length");
}

}  // namespace rtv

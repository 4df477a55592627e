// Fixed-width packed integers (SA/ISA samples, doc rows): ceil(log2(max+1)) bits per value.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "serial.hpp"

namespace rtv {

class IntVector {
 public:
  static unsigned width_for(uint64_t max_value) {
    unsigned w = 1;
    while (w < 64 && (max_value >> w) != 0) ++w;
    return w;
  }

  template <class Values>
  static void write(Writer& out, const Values& values, unsigned width) {
    if (width == 0 || width > kMaxWidth) throw std::invalid_argument("IntVector width out of range");
    // One spare word so a read of the last value may load 8 bytes.
    std::vector<uint64_t> words((static_cast<uint64_t>(values.size()) * width + 63) / 64 + 1, 0);
    uint64_t bit = 0;
    for (uint64_t v : values) {
      words[bit >> 6] |= v << (bit & 63);
      if ((bit & 63) + width > 64) words[(bit >> 6) + 1] |= v >> (64 - (bit & 63));
      bit += width;
    }
    out.put_u64(values.size());
    out.put_u64(width);
    out.put_vector(words);
  }

  void load(Reader& in) {
    size_ = in.get_u64();
    width_ = in.get_u64();
    if (width_ == 0 || width_ > kMaxWidth) in.fail("bad integer width");
    uint64_t n_words;
    words_ = reinterpret_cast<const uint8_t*>(in.get_array<uint64_t>(n_words));
    if (size_ > (n_words * 64) / width_ || n_words * 64 < size_ * width_ + 64) in.fail("packed array too short");
    mask_ = (uint64_t{1} << width_) - 1;
  }

  uint64_t size() const { return size_; }
  void prefetch(uint64_t i) const { __builtin_prefetch(words_ + ((i * width_) >> 3)); }
  uint64_t operator[](uint64_t i) const {
    const uint64_t bit = i * width_;
    uint64_t v;
    std::memcpy(&v, words_ + (bit >> 3), 8);  // width <= 56, so one unaligned load suffices
    return (v >> (bit & 7)) & mask_;
  }

 private:
  static constexpr unsigned kMaxWidth = 56;
  const uint8_t* words_ = nullptr;
  uint64_t size_ = 0, width_ = 1, mask_ = 1;
};

}  // namespace rtv

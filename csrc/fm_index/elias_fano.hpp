// Elias-Fano coded sorted set (2 + log2(universe/size) bits per element): marks the SA-sampled
// rows and the document starts, where a plain bitvector would cost a bit per text byte.
#pragma once
#include <cstdint>
#include <vector>

#include "int_vector.hpp"
#include "serial.hpp"

namespace rtv {

class EliasFano {
 public:
  // values: strictly increasing, all < universe.
  static void write(Writer& out, const std::vector<uint64_t>& values, uint64_t universe);
  void load(Reader& in);

  uint64_t size() const { return size_; }
  uint64_t universe() const { return universe_; }
  uint64_t select(uint64_t k) const;  // k-th smallest element (k < size)
  uint64_t rank(uint64_t x) const;    // elements < x
  // True if x is an element; rank receives the number of elements < x either way.
  bool contains(uint64_t x, uint64_t& rank) const;

 private:
  bool upper_bit(uint64_t pos) const { return (upper_[pos >> 6] >> (pos & 63)) & 1; }
  uint64_t select_upper(uint64_t k, bool ones) const;
  uint64_t bucket_begin(uint64_t high) const;  // position in upper_ of bucket 'high'

  static constexpr uint64_t kSampleEvery = 256;  // select samples: 0.25 bit per element, short scans
  uint64_t size_ = 0, universe_ = 0, low_bits_ = 0, upper_bits_ = 0;
  const uint64_t* upper_ = nullptr;
  uint64_t n_upper_words_ = 0;
  const uint64_t* ones_samples_ = nullptr;   // position of every 64th one
  const uint64_t* zeros_samples_ = nullptr;  // position of every 64th zero
  uint64_t n_ones_samples_ = 0, n_zeros_samples_ = 0;
  IntVector low_;
};

}  // namespace rtv

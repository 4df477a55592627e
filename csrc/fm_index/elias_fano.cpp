#include "elias_fano.hpp"

#include "bits.hpp"

namespace rtv {

void EliasFano::write(Writer& out, const std::vector<uint64_t>& values, uint64_t universe) {
  const uint64_t m = values.size();
  uint64_t low_bits = 0;
  while (m > 0 && (universe / m) >> (low_bits + 1) != 0) ++low_bits;
  const uint64_t upper_bits = m + (universe >> low_bits) + 1;
  std::vector<uint64_t> upper((upper_bits + 63) / 64 + 1, 0);
  std::vector<uint64_t> lows;
  lows.reserve(m);
  const uint64_t low_mask = (uint64_t{1} << low_bits) - 1;
  for (uint64_t k = 0; k < m; ++k) {
    const uint64_t pos = (values[k] >> low_bits) + k;
    upper[pos >> 6] |= uint64_t{1} << (pos & 63);
    lows.push_back(values[k] & low_mask);
  }
  std::vector<uint64_t> ones_samples, zeros_samples;
  uint64_t ones = 0, zeros = 0;
  for (uint64_t pos = 0; pos < upper_bits; ++pos) {
    if ((upper[pos >> 6] >> (pos & 63)) & 1) {
      if (ones++ % kSampleEvery == 0) ones_samples.push_back(pos);
    } else if (zeros++ % kSampleEvery == 0) {
      zeros_samples.push_back(pos);
    }
  }
  out.put_u64(m);
  out.put_u64(universe);
  out.put_u64(low_bits);
  out.put_u64(upper_bits);
  out.put_vector(upper);
  out.put_vector(ones_samples);
  out.put_vector(zeros_samples);
  IntVector::write(out, lows, low_bits == 0 ? 1 : static_cast<unsigned>(low_bits));
}

void EliasFano::load(Reader& in) {
  size_ = in.get_u64();
  universe_ = in.get_u64();
  low_bits_ = in.get_u64();
  upper_bits_ = in.get_u64();
  if (size_ > universe_ || low_bits_ > 56 || upper_bits_ != size_ + (universe_ >> low_bits_) + 1) in.fail("bad Elias-Fano sizes");
  upper_ = in.get_array<uint64_t>(n_upper_words_);
  if (n_upper_words_ * 64 < upper_bits_ + 64) in.fail("Elias-Fano upper bits too short");
  ones_samples_ = in.get_array<uint64_t>(n_ones_samples_);
  zeros_samples_ = in.get_array<uint64_t>(n_zeros_samples_);
  const uint64_t n_zeros = upper_bits_ - size_;
  if (n_ones_samples_ != (size_ + kSampleEvery - 1) / kSampleEvery ||
      n_zeros_samples_ != (n_zeros + kSampleEvery - 1) / kSampleEvery)
    in.fail("Elias-Fano samples have the wrong length");
  for (uint64_t i = 0; i < n_ones_samples_; ++i)
    if (ones_samples_[i] >= upper_bits_) in.fail("Elias-Fano sample out of range");
  for (uint64_t i = 0; i < n_zeros_samples_; ++i)
    if (zeros_samples_[i] >= upper_bits_) in.fail("Elias-Fano sample out of range");
  low_.load(in);
  if (low_.size() != size_) in.fail("Elias-Fano low bits have the wrong length");
}

// Position of the k-th one (or zero) of the upper bits: jump to a sample, then scan words.
uint64_t EliasFano::select_upper(uint64_t k, bool ones) const {
  const uint64_t* samples = ones ? ones_samples_ : zeros_samples_;
  uint64_t pos = samples[k / kSampleEvery];
  uint64_t left = k % kSampleEvery;
  uint64_t word_idx = pos >> 6;
  uint64_t w = ones ? upper_[word_idx] : ~upper_[word_idx];
  w &= ~uint64_t{0} << (pos & 63);
  for (;;) {
    const unsigned c = popcount64(w);
    if (left < c) return word_idx * 64 + select_in_word(w, static_cast<unsigned>(left));
    left -= c;
    if (__builtin_expect(++word_idx >= n_upper_words_, 0)) corrupt("Elias-Fano select runs past its bits");
    w = ones ? upper_[word_idx] : ~upper_[word_idx];
  }
}

uint64_t EliasFano::select(uint64_t k) const {
  if (__builtin_expect(k >= size_, 0)) corrupt("Elias-Fano select out of range");
  const uint64_t high = select_upper(k, true) - k;
  return (high << low_bits_) | (low_bits_ ? low_[k] : 0);
}

uint64_t EliasFano::bucket_begin(uint64_t high) const {
  return high == 0 ? 0 : select_upper(high - 1, false) + 1;
}

bool EliasFano::contains(uint64_t x, uint64_t& rank) const {
  if (x >= universe_) {
    rank = size_;
    return false;
  }
  const uint64_t high = x >> low_bits_;
  const uint64_t low = low_bits_ ? x & ((uint64_t{1} << low_bits_) - 1) : 0;
  uint64_t pos = bucket_begin(high);
  uint64_t k = pos - high;  // ones before the bucket = elements with a smaller high part
  for (; pos < upper_bits_ && upper_bit(pos); ++pos, ++k) {
    if (__builtin_expect(k >= size_, 0)) corrupt("Elias-Fano bucket runs past its elements");
    const uint64_t l = low_bits_ ? low_[k] : 0;
    if (l >= low) {
      rank = k;
      return l == low;
    }
  }
  rank = k;
  return false;
}

uint64_t EliasFano::rank(uint64_t x) const {
  uint64_t r;
  contains(x, r);
  return r;
}

}  // namespace rtv

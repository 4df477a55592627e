// Inverse of a stored permutation pi through cycle shortcuts (Munro, Raman, Raman & Rao 2003):
// along every cycle longer than kStep, every kStep-th element is marked and keeps a pointer back
// to the previous marked element. pi^-1(k) walks forward from k to a mark, jumps back, and walks
// forward again: at most 2 * kStep + 1 evaluations of pi, for (1 + log2(n)) / kStep bits per
// element instead of the log2(n) of a stored inverse.
//
// Used for the ISA samples: pi = the SA samples (sample index -> position / sa_sample), so the
// row of position k * sa_sample is select(marks, pi^-1(k)).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "elias_fano.hpp"
#include "int_vector.hpp"
#include "serial.hpp"

namespace rtv {

class InversePermutation {
 public:
  static constexpr uint64_t kStep = 16;
  // pi: a permutation of [0, pi.size()).
  static void write(Writer& out, const std::vector<uint32_t>& pi);
  // Checks the section against the permutation it inverts (size only; pi itself is the caller's).
  void load(Reader& in, uint64_t n);
  // pi^-1(k); throws FormatError if the shortcuts do not lead back to k (a damaged file).
  uint64_t inverse(const IntVector& pi, uint64_t k) const;
  // ks[i] = pi^-1(ks[i]) for every i: up to kLanes inversions in lockstep, each prefetching its
  // next element of pi, so their cache misses overlap. Same results and errors as inverse().
  void inverse_many(const IntVector& pi, uint64_t* ks, size_t n) const;
  static constexpr size_t kLanes = 16;

 private:
  uint64_t n_ = 0;
  EliasFano marked_;  // marked elements (sample indices)
  IntVector back_;    // per marked element, in index order: the previous marked element of its cycle
};

}  // namespace rtv

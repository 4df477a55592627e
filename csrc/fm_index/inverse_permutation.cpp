#include "inverse_permutation.hpp"

#include <algorithm>
#include <stdexcept>

namespace rtv {

void InversePermutation::write(Writer& out, const std::vector<uint32_t>& pi) {
  const uint64_t n = pi.size();
  std::vector<uint64_t> visited((n + 63) / 64, 0);
  std::vector<std::pair<uint64_t, uint64_t>> marks;  // (element, previous marked element)
  std::vector<uint64_t> cycle_marks;
  for (uint64_t start = 0; start < n; ++start) {
    if ((visited[start >> 6] >> (start & 63)) & 1) continue;
    cycle_marks.clear();
    uint64_t x = start, len = 0;
    do {
      if (len % kStep == 0) cycle_marks.push_back(x);
      visited[x >> 6] |= uint64_t{1} << (x & 63);
      x = pi[x];
      if (x >= n) throw std::invalid_argument("not a permutation");
      ++len;
    } while (x != start);
    if (len <= kStep) continue;  // a walk of at most kStep steps finds the inverse
    for (size_t j = 0; j < cycle_marks.size(); ++j)
      marks.push_back({cycle_marks[j], cycle_marks[j == 0 ? cycle_marks.size() - 1 : j - 1]});
  }
  std::sort(marks.begin(), marks.end());
  std::vector<uint64_t> elements(marks.size()), back(marks.size());
  for (size_t i = 0; i < marks.size(); ++i) {
    elements[i] = marks[i].first;
    back[i] = marks[i].second;
  }
  out.put_u64(kStep);
  EliasFano::write(out, elements, n == 0 ? 1 : n);
  IntVector::write(out, back, IntVector::width_for(n));
}

void InversePermutation::load(Reader& in, uint64_t n) {
  n_ = n;
  if (in.get_u64() != kStep) in.fail("unsupported inverse-permutation step");
  marked_.load(in);
  back_.load(in);
  if (marked_.universe() != (n == 0 ? 1 : n) || back_.size() != marked_.size()) in.fail("bad inverse-permutation shortcuts");
}

uint64_t InversePermutation::inverse(const IntVector& pi, uint64_t k) const {
  if (k >= n_) throw FormatError("corrupt shard: inverse suffix-array sample out of range");
  uint64_t x = k, rank;
  bool jumped = false;
  for (uint64_t steps = 0; steps <= 2 * kStep + 2; ++steps) {
    const uint64_t y = pi[x];
    if (y == k) return x;
    if (!jumped && marked_.contains(x, rank)) {
      x = back_[rank];
      jumped = true;
    } else {
      x = y;
    }
    if (x >= n_) break;
  }
  throw FormatError("corrupt shard: inverse suffix-array shortcuts do not close");
}

void InversePermutation::inverse_many(const IntVector& pi, uint64_t* ks, size_t n) const {
  struct Lane {
    size_t idx;
    uint64_t k, x, steps;
    bool jumped;
  };
  Lane lanes[kLanes];
  size_t live = 0, next = 0;
  auto start = [&](Lane& l) {
    l = {next, ks[next], ks[next], 0, false};
    ++next;
    if (l.x >= n_) throw FormatError("corrupt shard: inverse suffix-array sample out of range");
    pi.prefetch(l.x);
  };
  while (live < kLanes && next < n) start(lanes[live++]);
  while (live > 0) {
    for (size_t i = 0; i < live;) {
      Lane& l = lanes[i];
      // One step of inverse(): the same walk, one element of pi per visit.
      const uint64_t y = pi[l.x];
      bool done = false;
      if (y == l.k) {
        ks[l.idx] = l.x;
        done = true;
      } else {
        uint64_t rank;
        if (!l.jumped && marked_.contains(l.x, rank)) {
          l.x = back_[rank];
          l.jumped = true;
        } else {
          l.x = y;
        }
        if (l.x >= n_ || ++l.steps > 2 * kStep + 2)
          throw FormatError("corrupt shard: inverse suffix-array shortcuts do not close");
        pi.prefetch(l.x);
      }
      if (done) {
        if (next < n) {
          start(l);
        } else {
          l = lanes[--live];
          continue;
        }
      }
      ++i;
    }
  }
}

}  // namespace rtv

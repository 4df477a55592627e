#include "sais.hpp"

#include <algorithm>
#include <vector>

namespace rtv {
namespace {

// No S/L type bitvector (it was n/8 bytes at the top level plus n1/8 at each recursion level,
// ~0.19 bytes per text byte on real text, which kept the build above text + suffix array). Types
// come from the text instead:
// - right to left, the type of i follows from s[i], s[i + 1] and the type of i + 1 (LMS scans);
// - in the left-to-right induce scan the array holds only LMS seeds and L-type suffixes, so for an
//   entry p, suffix p - 1 is L-type exactly when s[p - 1] >= s[p];
// - the right-to-left induce scan marks every suffix it places (S-type) with kPlacedS, so for an
//   entry p, suffix p - 1 is S-type when s[p - 1] < s[p], or s[p - 1] == s[p] and p is marked;
// - LMS substrings are named by their lengths (stored in the free half of the array) and their
//   bytes: same length and bytes means same types too, as both end at an (S-type) LMS position.
// Working memory beyond text and suffix array is then one bucket array of k ints, held in free
// suffix-array space when it fits.
constexpr int32_t kEmpty = -1;
constexpr uint32_t kPlacedS = 0x80000000u;  // values are < n < 2^31, so the sign bit is free
constexpr uint32_t kValue = 0x7FFFFFFFu;

inline int32_t mark_s(int32_t p) { return static_cast<int32_t>(static_cast<uint32_t>(p) | kPlacedS); }
inline bool marked_s(int32_t v) { return v != kEmpty && (static_cast<uint32_t>(v) & kPlacedS) != 0; }
inline int32_t value(int32_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v) & kValue); }

// Bucket starts or ends per symbol (bkt[0, k)). Recounted on every call instead of keeping a
// count array so the recursion holds one array of k ints, not two.
template <class Char>
void fill_buckets(const Char* s, int32_t n, int32_t* bkt, int32_t k, bool ends) {
  std::fill(bkt, bkt + k, 0);
  for (int32_t i = 0; i < n; ++i) ++bkt[s[i]];
  int32_t sum = 0;
  for (int32_t c = 0; c < k; ++c) {
    sum += bkt[c];
    bkt[c] = ends ? sum : sum - bkt[c];
  }
}

// fn(p) for every LMS position p (S-type, after an L-type one), from the last to the first.
// Suffix n - 1 is L-type: the virtual sentinel after it is smaller than every symbol.
template <class Char, class Fn>
void for_each_lms_descending(const Char* s, int32_t n, const Fn& fn) {
  bool next_s = false;
  for (int64_t i = static_cast<int64_t>(n) - 2; i >= 0; --i) {
    const bool is_s = s[i] < s[i + 1] || (s[i] == s[i + 1] && next_s);
    if (next_s && !is_s) fn(static_cast<int32_t>(i + 1));
    next_s = is_s;
  }
}

// Induces L-type suffixes from the seeds in sa (LMS suffixes at their buckets' ends, kEmpty
// elsewhere), then S-type suffixes from those. Every entry placed by the second scan is left
// marked with kPlacedS (the LMS suffixes among them are what stage 1 collects).
template <class Char>
void induce(const Char* s, int32_t* sa, int32_t n, int32_t* bkt, int32_t k) {
  constexpr int64_t kAhead = 16;  // prefetch distance for the random text reads
  fill_buckets(s, n, bkt, k, false);
  sa[bkt[s[n - 1]]++] = n - 1;
  for (int64_t i = 0; i < n; ++i) {
    if (i + kAhead < n && sa[i + kAhead] > 0) __builtin_prefetch(s + sa[i + kAhead] - 1);
    const int32_t p = sa[i];
    if (p > 0 && s[p - 1] >= s[p]) sa[bkt[s[p - 1]]++] = p - 1;
  }
  fill_buckets(s, n, bkt, k, true);
  for (int64_t i = n - 1; i >= 0; --i) {
    if (i >= kAhead && sa[i - kAhead] != kEmpty && value(sa[i - kAhead]) > 0)
      __builtin_prefetch(s + value(sa[i - kAhead]) - 1);
    const int32_t v = sa[i];
    if (v == kEmpty) continue;
    const int32_t p = value(v);
    if (p == 0) continue;
    const auto before = s[p - 1], at = s[p];
    if (before < at || (before == at && marked_s(v))) sa[--bkt[before]] = mark_s(p - 1);
  }
}

// space: space_len ints the caller does not need meanwhile (the part of its suffix array that
// neither this level's array nor its string occupies); the buckets live there when they fit, so
// a recursion level costs no k ints of its own heap.
template <class Char>
void sais(const Char* s, int32_t* sa, int32_t n, int32_t k, int32_t* space, int64_t space_len) {
  if (n <= 0) return;
  if (n == 1) {
    sa[0] = 0;
    return;
  }
  // Stage 1: sort the LMS substrings by inducing from LMS positions at bucket ends.
  const bool own_bkt = k > space_len;
  std::vector<int32_t> own(own_bkt ? static_cast<size_t>(k) : 0);
  int32_t* bkt = own_bkt ? own.data() : space;
  fill_buckets(s, n, bkt, k, true);
  std::fill(sa, sa + n, kEmpty);
  for_each_lms_descending(s, n, [&](int32_t p) { sa[--bkt[s[p]]] = p; });
  induce(s, sa, n, bkt, k);

  // The LMS suffixes in sorted order: marked (S-type) entries after an L-type position.
  int32_t n1 = 0;
  for (int32_t i = 0; i < n; ++i) {
    const int32_t v = sa[i];
    if (!marked_s(v)) continue;
    const int32_t p = value(v);
    if (p > 0 && s[p - 1] > s[p]) sa[n1++] = p;
  }

  // Name the sorted LMS substrings; LMS positions are >= 2 apart, so pos/2 slots are unique.
  // First each slot holds its substring's length, up to and including the next LMS position;
  // the last substring reaches the virtual sentinel (length n - p + 1), so it equals no other.
  std::fill(sa + n1, sa + n, kEmpty);
  int64_t next_lms = n;
  for_each_lms_descending(s, n, [&](int32_t p) {
    sa[n1 + p / 2] = static_cast<int32_t>(next_lms - p + 1);
    next_lms = p;
  });
  int32_t names = 0;
  int64_t prev = -1, prev_len = 0;
  for (int32_t i = 0; i < n1; ++i) {
    const int64_t pos = sa[i];
    const int64_t len = sa[n1 + pos / 2];
    const bool same = prev >= 0 && len == prev_len && pos + len <= n && prev + len <= n &&
                      std::equal(s + pos, s + pos + len, s + prev);
    if (!same) {
      ++names;
      prev = pos;
      prev_len = len;
    }
    sa[n1 + pos / 2] = names - 1;
  }
  for (int64_t i = n - 1, j = n - 1; i >= n1; --i)
    if (sa[i] >= 0) sa[j--] = sa[i];

  // Stage 2: sort the LMS suffixes, recursing while names are not unique.
  int32_t* s1 = sa + n - n1;
  if (names < n1) {
    std::vector<int32_t>().swap(own);  // release before recursing
    // sa[n1, n - n1) is free while the recursion sorts into sa[0, n1) from s1 = sa[n - n1, n)
    sais<int32_t>(s1, sa, n1, names, sa + n1, static_cast<int64_t>(n) - 2 * static_cast<int64_t>(n1));
    if (own_bkt) {
      own.resize(static_cast<size_t>(k));
      bkt = own.data();
    }
  } else {
    for (int32_t i = 0; i < n1; ++i) sa[s1[i]] = i;
  }

  // Stage 3: place the sorted LMS suffixes at bucket ends and induce the rest.
  fill_buckets(s, n, bkt, k, true);
  int32_t j = n1;
  for_each_lms_descending(s, n, [&](int32_t p) { s1[--j] = p; });
  for (int32_t i = 0; i < n1; ++i) sa[i] = s1[sa[i]];
  std::fill(sa + n1, sa + n, kEmpty);
  for (int32_t i = n1 - 1; i >= 0; --i) {
    const int32_t p = sa[i];
    sa[i] = kEmpty;
    sa[--bkt[s[p]]] = p;
  }
  induce(s, sa, n, bkt, k);
  for (int32_t i = 0; i < n; ++i) sa[i] = value(sa[i]);
}

}  // namespace

void suffix_array(const uint8_t* text, int32_t n, int32_t* sa) { sais<uint8_t>(text, sa, n, 256, nullptr, 0); }

}  // namespace rtv

#include "sais.hpp"

#include <algorithm>
#include <vector>

namespace rtv {
namespace {

// S/L suffix types, one bit each (1 = S); position n is the virtual sentinel (S).
class SuffixTypes {
 public:
  explicit SuffixTypes(int64_t n) : words_(static_cast<size_t>(n / 64 + 2), 0) {}
  void set_s(int64_t i) { words_[i >> 6] |= uint64_t{1} << (i & 63); }
  bool s(int64_t i) const { return (words_[i >> 6] >> (i & 63)) & 1; }
  bool lms(int64_t i) const { return i > 0 && s(i) && !s(i - 1); }

 private:
  std::vector<uint64_t> words_;
};

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

// Types come from the text where possible instead of the type bitvector, whose lookups would be a
// second random memory access per suffix (s[j] and s[j + 1] share a cache line):
// - left-to-right, the array holds only LMS seeds and L-type suffixes, so for an entry j + 1,
//   suffix j is L-type exactly when s[j] >= s[j + 1];
// - right-to-left over a byte text, entry i is S-type exactly when it lies past the L-type part of
//   its bucket, whose end the first scan leaves in bkt (kept in l_end; 256 entries).
template <class Char>
void induce(const Char* s, const SuffixTypes& t, int32_t* sa, int32_t n, int32_t* bkt, int32_t k) {
  constexpr int64_t kAhead = 16;  // prefetch distance for the random text reads
  fill_buckets(s, n, bkt, k, false);
  // Suffix n-1 follows the virtual sentinel: it is L-type and the smallest of its bucket.
  sa[bkt[s[n - 1]]++] = n - 1;
  for (int64_t i = 0; i < n; ++i) {
    if (i + kAhead < n && sa[i + kAhead] > 0) __builtin_prefetch(s + sa[i + kAhead] - 1);
    const int32_t j = sa[i] - 1;
    if (sa[i] > 0 && s[j] >= s[j + 1]) sa[bkt[s[j]]++] = j;
  }
  constexpr bool kBytes = sizeof(Char) == 1;
  std::vector<int32_t> l_end;
  if (kBytes) l_end.assign(bkt, bkt + k);
  fill_buckets(s, n, bkt, k, true);
  for (int64_t i = n - 1; i >= 0; --i) {
    if (i >= kAhead && sa[i - kAhead] > 0) __builtin_prefetch(s + sa[i - kAhead] - 1);
    const int32_t j = sa[i] - 1;
    if (sa[i] <= 0) continue;
    bool j_is_s;
    if (kBytes) {
      const auto c = s[j + 1];
      j_is_s = s[j] < c || (s[j] == c && i >= l_end[c]);
    } else {
      j_is_s = t.s(j);
    }
    if (j_is_s) sa[--bkt[s[j]]] = j;
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
  SuffixTypes t(n + 1);
  t.set_s(n);
  for (int64_t i = n - 2; i >= 0; --i)
    if (s[i] < s[i + 1] || (s[i] == s[i + 1] && t.s(i + 1))) t.set_s(i);

  // Stage 1: sort the LMS substrings by inducing from LMS positions at bucket ends.
  const bool own_bkt = k > space_len;
  std::vector<int32_t> own(own_bkt ? static_cast<size_t>(k) : 0);
  int32_t* bkt = own_bkt ? own.data() : space;
  fill_buckets(s, n, bkt, k, true);
  std::fill(sa, sa + n, -1);
  for (int32_t i = 1; i < n; ++i)
    if (t.lms(i)) sa[--bkt[s[i]]] = i;
  induce(s, t, sa, n, bkt, k);

  int32_t n1 = 0;
  for (int32_t i = 0; i < n; ++i)
    if (t.lms(sa[i])) sa[n1++] = sa[i];

  // Name the sorted LMS substrings; LMS positions are >= 2 apart, so pos/2 slots are unique.
  std::fill(sa + n1, sa + n, -1);
  int32_t names = 0;
  int64_t prev = -1;
  for (int32_t i = 0; i < n1; ++i) {
    const int64_t pos = sa[i];
    bool diff = false;
    for (int64_t d = 0;; ++d) {
      if (prev < 0 || pos + d == n || prev + d == n || s[pos + d] != s[prev + d] ||
          t.s(pos + d) != t.s(prev + d)) {
        diff = true;
        break;
      }
      if (d > 0 && (t.lms(pos + d) || t.lms(prev + d))) break;
    }
    if (diff) {
      ++names;
      prev = pos;
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
  for (int32_t i = 1, j = 0; i < n; ++i)
    if (t.lms(i)) s1[j++] = i;
  for (int32_t i = 0; i < n1; ++i) sa[i] = s1[sa[i]];
  std::fill(sa + n1, sa + n, -1);
  for (int32_t i = n1 - 1; i >= 0; --i) {
    int32_t j = sa[i];
    sa[i] = -1;
    sa[--bkt[s[j]]] = j;
  }
  induce(s, t, sa, n, bkt, k);
}

}  // namespace

void suffix_array(const uint8_t* text, int32_t n, int32_t* sa) { sais<uint8_t>(text, sa, n, 256, nullptr, 0); }

}  // namespace rtv

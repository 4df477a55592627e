#include "fm_index.hpp"

#include <algorithm>
#include <climits>
#include <cstring>
#include <exception>
#include <numeric>
#include <stdexcept>
#include <thread>

namespace rtv {
namespace {

// Runs fn(t) for t in [0, n) on n threads (the calling thread takes t = 0) and rethrows the
// first exception, in order of t, once all are done.
template <class Fn>
void run_on_threads(size_t n, const Fn& fn) {
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> pool;
  pool.reserve(n > 0 ? n - 1 : 0);
  auto guarded = [&](size_t t) {
    try {
      fn(t);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  for (size_t t = 1; t < n; ++t) pool.emplace_back(guarded, t);
  if (n > 0) guarded(0);
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

unsigned hardware_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

// Every window [starts[i], starts[i] + lengths[i]) must be non-empty and inside the text.
void check_windows(std::string_view text, const int64_t* starts, const int64_t* lengths, size_t n_windows) {
  for (size_t i = 0; i < n_windows; ++i) {
    if (starts[i] < 0 || lengths[i] <= 0 || static_cast<uint64_t>(starts[i]) > text.size() ||
        static_cast<uint64_t>(lengths[i]) > text.size() - static_cast<uint64_t>(starts[i]))
      throw std::invalid_argument("window " + std::to_string(i) + " (start " + std::to_string(starts[i]) +
                                  ", length " + std::to_string(lengths[i]) + ") is empty or outside the text");
  }
}

}  // namespace

Shard::Shard(const std::string& path, bool verify) : file_(path, verify) {
  const ShardInfo& info = file_.info();
  const uint64_t rows = info.text_bytes + 1;
  {
    Reader in = file_.section(kSectionCounts);
    primary_ = in.get_u64();
    C_ = in.get_array_of<uint64_t>(257);
    if (primary_ >= rows || C_[256] != rows) in.fail("bad row counts");
    for (int c = 0; c < 256; ++c)
      if (C_[c] > C_[c + 1] || C_[c] == 0) in.fail("bad symbol counts");
    if (in.remaining() > 0) {
      pairs_ = in.get_array_of<uint32_t>(kPairRows);
      // Each byte's entries ascend within its rows, so every range read from the table lies in C's.
      for (uint64_t a = 0; a < 255; ++a)
        for (uint64_t b = 0; b < 256; ++b) {
          const uint64_t row = pairs_[a << 8 | b];
          if (row < (b == 0 ? C_[a] : pairs_[(a << 8 | b) - 1]) || row > C_[a + 1]) in.fail("bad pair table");
        }
    }
  }
  {
    Reader in = file_.section(kSectionBwt);
    bwt_.load(in);
    if (bwt_.size() != rows) in.fail("BWT length does not match the text size");
  }
  {
    Reader in = file_.section(kSectionSaMarks);
    sa_marks_.load(in);
    if (sa_marks_.universe() != rows) in.fail("marks do not match the text size");
  }
  {
    Reader in = file_.section(kSectionSaValues);
    sa_values_.load(in);
    if (sa_values_.size() != sa_marks_.size()) in.fail("sample count does not match the marks");
  }
  {
    Reader in = file_.section(kSectionIsa);
    isa_kind_ = in.get_u64();
    if (isa_kind_ == 2) {
      if (info.isa_sample % info.sa_sample != 0) in.fail("ISA shortcuts need isa_sample to be a multiple of sa_sample");
      isa_shortcuts_.load(in, sa_values_.size());
    } else if (isa_kind_ == 0) {
      isa_.load(in);
      if (isa_.size() != (info.text_bytes + info.isa_sample - 1) / info.isa_sample) in.fail("wrong sample count");
    } else {
      throw FormatError("corrupt shard section 'isa': unknown ISA sample kind " + std::to_string(isa_kind_) +
                        " (this rtv reads kinds 0 and 2); rebuild the index");
    }
  }
  {
    Reader in = file_.section(kSectionDocStarts);
    doc_starts_.load(in);
    if (doc_starts_.size() != info.n_docs || doc_starts_.universe() != info.text_bytes ||
        doc_starts_.select(0) != 0)
      in.fail("document starts do not match the header");
  }
  {
    Reader in = file_.section(kSectionDocEndRows);
    doc_end_rows_.load(in);
    if (doc_end_rows_.size() != info.n_docs) in.fail("wrong document count");
    for (uint64_t d = 0; d < info.n_docs; ++d)
      if (doc_end_rows_[d] >= rows) in.fail("document end row out of range");
  }
}

uint64_t Shard::doc_start(uint64_t doc) const {
  check_doc(doc);
  return doc_starts_.select(doc);
}

uint64_t Shard::doc_length(uint64_t doc) const {
  const uint64_t start = doc_start(doc);
  const uint64_t next = doc + 1 < n_docs() ? doc_starts_.select(doc + 1) : text_bytes();
  if (next <= start || next > text_bytes()) corrupt("document starts out of order");
  return next - start - 1;  // minus the separator
}

std::vector<uint64_t> Shard::doc_lengths() const {
  std::vector<uint64_t> out(n_docs());
  uint64_t start = doc_starts_.select(0);
  for (uint64_t d = 0; d < out.size(); ++d) {
    const uint64_t next = d + 1 < out.size() ? doc_starts_.select(d + 1) : text_bytes();
    if (next <= start || next > text_bytes()) corrupt("document starts out of order");
    out[d] = next - start - 1;
    start = next;
  }
  return out;
}

void Shard::check_doc(uint64_t doc) const {
  if (doc >= n_docs())
    throw std::out_of_range("document id " + std::to_string(doc) + " out of range (shard has " +
                            std::to_string(n_docs()) + " documents)");
}

Shard::Range Shard::search(std::string_view pattern) const {
  if (pattern.empty()) throw std::invalid_argument("empty pattern");
  if (pattern.find(static_cast<char>(kSeparator)) != std::string_view::npos) return {0, 0};
  // The rows of the last byte come from C, of the last two from the pair table where there is one
  // (no 0xFF in the pattern: the table covers it); then one step per byte, each walk's first
  // lines asked for by the step before.
  size_t k = pattern.size() - 1;  // pattern[k, end) is matched
  const auto last = static_cast<uint8_t>(pattern[k]);
  Range r{C_[last], C_[last + 1]};
  if (pairs_ != nullptr && k > 0) {
    const size_t x = size_t{static_cast<uint8_t>(pattern[k - 1])} << 8 | last;
    r = {pairs_[x], pairs_[x + 1]};
    --k;
  }
  for (const size_t first = k; k > 0 && !r.empty(); --k) {
    const auto c = static_cast<uint8_t>(pattern[k - 1]);
    const int next = k >= 2 ? static_cast<uint8_t>(pattern[k - 2]) : WaveletTree::kNoNext;
    bwt_.rank_pair(c, r.lo, r.hi, next, C_[c], k == first);
    r = {C_[c] + r.lo, C_[c] + r.hi};
  }
  if (r.empty()) return Range{0, 0};
  if (r.hi > C_[256]) corrupt("suffix-array range out of range");
  return r;
}

uint64_t Shard::count(std::string_view pattern) const {
  const Range r = search(pattern);
  return r.hi - r.lo;
}

// Walks LF until a row whose text position is sampled; at most sa_sample steps.
uint64_t Shard::text_position(uint64_t row) const {
  const uint64_t s = sa_sample();
  for (uint64_t steps = 0; steps <= s; ++steps) {
    uint64_t k;
    if (sa_marks_.contains(row, k)) {
      const uint64_t pos = sa_values_[k] * s + steps;
      if (pos > text_bytes()) corrupt("suffix-array sample out of range");
      return pos;
    }
    uint8_t c;
    row = lf(row, c);
  }
  throw FormatError("corrupt shard: no suffix-array sample within sa_sample steps");
}

std::vector<Occurrence> Shard::locate(std::string_view pattern, uint64_t offset, uint64_t limit) const {
  const Range r = search(pattern);
  const uint64_t begin = r.lo + std::min(offset, r.hi - r.lo);
  const uint64_t end = begin + std::min(limit, r.hi - begin);
  std::vector<Occurrence> out;
  out.reserve(end - begin);
  for (uint64_t row = begin; row < end; ++row) {
    const uint64_t pos = text_position(row);
    const uint64_t doc = doc_of(pos), start = doc_starts_.select(doc);
    if (start > pos) corrupt("document starts out of order");
    out.push_back({doc, pos - start});
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<Occurrence> Shard::locate_rows(const int64_t* rows, size_t n, size_t group) const {
  for (size_t i = 0; i < n; ++i)
    if (rows[i] < 0 || static_cast<uint64_t>(rows[i]) >= C_[256])
      throw std::out_of_range("row " + std::to_string(rows[i]) + " is not a suffix-array row (the shard has " +
                              std::to_string(C_[256]) + ")");
  // Lockstep lanes as in run_walks: each walks LF from its row to a sampled one.
  struct Lane : LfLane {
    size_t i;
    uint64_t steps;
  };
  const uint64_t s = sa_sample();
  std::vector<uint64_t> pos(n);
  size_t next = 0;
  // Puts lane l on the next item whose row is not sampled (the others are done at once);
  // false when none is left.
  auto start = [&](Lane& l) -> bool {
    for (; next < n; ++next) {
      uint64_t k;
      if (sa_marks_.contains(static_cast<uint64_t>(rows[next]), k)) {
        pos[next] = sa_values_[k] * s;
        continue;
      }
      l.i = next++;
      l.row = static_cast<uint64_t>(rows[l.i]);
      l.steps = 0;
      return true;
    }
    return false;
  };
  std::vector<Lane> lanes;
  for (Lane l; lanes.size() < std::max<size_t>(group, 1) && start(l);) lanes.push_back(l);
  lockstep_lf(lanes, [&](Lane& l, uint8_t) {
    if (++l.steps > s) throw FormatError("corrupt shard: no suffix-array sample within sa_sample steps");
    uint64_t k;
    if (!sa_marks_.contains(l.row, k)) return true;
    pos[l.i] = sa_values_[k] * s + l.steps;
    return start(l);
  });
  std::vector<Occurrence> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (pos[i] > text_bytes()) corrupt("suffix-array sample out of range");
    const uint64_t doc = doc_of(pos[i]), doc_start = doc_starts_.select(doc);
    if (doc_start > pos[i]) corrupt("document starts out of order");
    out[i] = {doc, pos[i] - doc_start};
  }
  return out;
}

std::vector<uint64_t> Shard::docs_in_range(Range r, const std::vector<uint64_t>* within) const {
  const uint64_t rows = r.hi - r.lo, n = n_docs();
  if (within == nullptr && rows < n / 8) {  // few occurrences: locate them all, sort, dedupe
    std::vector<uint64_t> out;
    out.reserve(rows);
    for (uint64_t row = r.lo; row < r.hi; ++row) out.push_back(doc_of(text_position(row)));
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
  // Many occurrences (or a set of candidates): mark documents in a bitmap and stop as soon as
  // every document that can still be found is, so a frequent pattern costs what its documents
  // need, not one locate per occurrence (a one-letter corpus: one locate instead of millions).
  std::vector<uint8_t> state(n, within == nullptr ? 1 : 0);  // 1: wanted, not found yet; 2: found
  uint64_t wanted = within == nullptr ? n : 0;
  if (within != nullptr) {
    for (uint64_t d : *within) {
      if (d >= n) throw std::invalid_argument("docs_in_range: candidate document out of range");
      if (state[d] == 0) ++wanted;
      state[d] = 1;
    }
  }
  for (uint64_t row = r.lo; row < r.hi && wanted > 0; ++row) {
    uint8_t& s = state[doc_of(text_position(row))];
    if (s == 1) {
      s = 2;
      --wanted;
    }
  }
  std::vector<uint64_t> out;
  for (uint64_t d = 0; d < n; ++d)
    if (state[d] == 2) out.push_back(d);
  return out;
}

std::vector<uint64_t> Shard::docs(std::string_view pattern) const { return docs_in_range(search(pattern)); }

std::vector<uint64_t> Shard::cnf(const std::vector<std::vector<std::string>>& clauses) const {
  if (clauses.empty()) throw std::invalid_argument("cnf needs at least one clause");
  // Resolve every term first: an unmatched clause ends the query before any locating.
  struct Clause {
    std::vector<Range> ranges;
    uint64_t total = 0;
  };
  std::vector<Clause> resolved;
  for (const auto& terms : clauses) {
    Clause c;
    for (const auto& t : terms) {
      const Range r = search(t);
      if (!r.empty()) c.ranges.push_back(r);
      c.total += r.hi - r.lo;
    }
    if (c.total == 0) return {};
    resolved.push_back(std::move(c));
  }
  std::sort(resolved.begin(), resolved.end(), [](const Clause& a, const Clause& b) { return a.total < b.total; });
  // The rarest clause lists its documents; each later clause only looks for those still in the
  // result (and stops when it has found them all), so a frequent term costs what the result needs.
  std::vector<uint64_t> result;
  for (size_t i = 0; i < resolved.size(); ++i) {
    std::vector<uint64_t> docs;  // this clause's documents (within the result after the first)
    std::vector<uint64_t> missing = result;  // of the result, not yet found in this clause
    for (const Range& r : resolved[i].ranges) {
      std::vector<uint64_t> d = docs_in_range(r, i == 0 ? nullptr : &missing);
      std::vector<uint64_t> merged;
      std::set_union(docs.begin(), docs.end(), d.begin(), d.end(), std::back_inserter(merged));
      docs = std::move(merged);
      if (i > 0) {
        std::vector<uint64_t> rest;
        std::set_difference(missing.begin(), missing.end(), d.begin(), d.end(), std::back_inserter(rest));
        missing = std::move(rest);
        if (missing.empty()) break;
      }
    }
    result = std::move(docs);
    if (result.empty()) break;
  }
  return result;
}

std::string Shard::extract(uint64_t doc) const {
  const int64_t d = static_cast<int64_t>(std::min<uint64_t>(doc, INT64_MAX)), start = 0, end = INT64_MAX;
  std::vector<uint64_t> offsets;
  return extract_ranges(&d, &start, &end, 1, offsets);
}

std::string Shard::snippet(uint64_t doc, uint64_t offset, uint64_t width) const {
  const int64_t d = static_cast<int64_t>(std::min<uint64_t>(doc, INT64_MAX));
  const uint64_t start = std::min<uint64_t>(offset, INT64_MAX);
  const uint64_t end = start + std::min<uint64_t>(width, INT64_MAX - start);
  const int64_t a = static_cast<int64_t>(start), b = static_cast<int64_t>(end);
  std::vector<uint64_t> offsets;
  return extract_ranges(&d, &a, &b, 1, offsets);
}

void Shard::rows_of_isa_samples(uint64_t* ks, size_t n) const {
  if (isa_kind_ == 0) {
    for (size_t i = 0; i < n; ++i) {
      if (ks[i] >= isa_.size()) corrupt("inverse suffix-array sample out of range");
      ks[i] = isa_[ks[i]];
    }
    return;
  }
  const uint64_t per = isa_sample() / sa_sample();
  for (size_t i = 0; i < n; ++i) ks[i] *= per;  // ISA sample k is SA-sample value k * per
  isa_shortcuts_.inverse_many(sa_values_, ks, n);
  for (size_t i = 0; i < n; ++i) ks[i] = sa_marks_.select(ks[i]);
}

std::string Shard::extract_ranges(const int64_t* docs, const int64_t* starts, const int64_t* ends, size_t n,
                                  std::vector<uint64_t>& offsets, size_t group, unsigned threads) const {
  // Where each range lies in the shard text: [a, b) within its document, which ends (at its
  // separator) at e.
  struct Span {
    uint64_t a, b, e, doc;
  };
  std::vector<Span> spans(n);
  offsets.assign(n + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    if (docs[i] < 0 || starts[i] < 0 || ends[i] < starts[i])
      throw std::invalid_argument("range " + std::to_string(i) + " (document " + std::to_string(docs[i]) + ", bytes " +
                                  std::to_string(starts[i]) + " to " + std::to_string(ends[i]) +
                                  "): negative, or its end is before its start");
    const auto doc = static_cast<uint64_t>(docs[i]);
    const uint64_t len = doc_length(doc);  // checks the document id
    const auto start = static_cast<uint64_t>(starts[i]);
    if (start > len)
      throw std::out_of_range("offset " + std::to_string(start) + " is beyond the end of document " +
                              std::to_string(doc) + " (" + std::to_string(len) + " bytes)");
    const uint64_t ds = doc_starts_.select(doc);
    const uint64_t end = std::min(static_cast<uint64_t>(ends[i]), len);
    spans[i] = {ds + start, ds + end, ds + len, doc};
    offsets[i + 1] = offsets[i] + (end - start);
  }
  std::string out(offsets[n], '\0');
  if (offsets[n] == 0) return out;

  // Every walk starts from a known row: the document's end (its separator's row) or an ISA
  // sample. The top walk of a range starts at the first of them at or after b; the bytes it
  // walks over between b and there are dropped. With several walks per range, the range is cut
  // at multiples of `cut` (a multiple of isa_sample).
  const uint64_t s = isa_sample();
  const bool serial = group <= 1;
  unsigned n_threads = 1;
  if (!serial) {
    n_threads = threads == kAutoThreads ? hardware_threads() : threads;
    // A thread pays for itself from ~64 KiB of text on; auto never asks for more than that.
    if (threads == kAutoThreads) n_threads = static_cast<unsigned>(std::min<uint64_t>(n_threads, 1 + offsets[n] / 65536));
  }
  const uint64_t lanes = serial ? 1 : group * n_threads;
  // Enough text for kSortedWalks walks per thread: walks of isa_sample bytes, sorted rounds.
  // Otherwise about 4 walks per lockstep lane: fewer ISA lookups, every lane kept busy.
  const bool many = offsets[n] / s >= kSortedWalks * n_threads;
  const uint64_t cut = many ? s : std::max<uint64_t>(s, offsets[n] / (4 * lanes) / s * s);
  std::vector<Walk> walks;
  walks.reserve(serial ? n : n + offsets[n] / cut + n);
  for (size_t i = 0; i < n; ++i) {
    const Span& sp = spans[i];
    if (sp.a == sp.b) continue;
    const uint64_t up = (sp.b + s - 1) / s * s;
    uint64_t x = up >= sp.e ? sp.e : up;
    uint64_t row = up >= sp.e ? doc_end_rows_[sp.doc] : 0, sample = up >= sp.e ? kNoSample : up / s;
    for (;;) {
      const uint64_t lo = serial ? sp.a : std::max(sp.a, (x - 1) / cut * cut);
      walks.push_back({row, sample, x - lo, std::min(sp.b, x) - lo, offsets[i] + (lo - sp.a)});
      if (lo == sp.a) break;
      x = lo;
      row = 0;
      sample = lo / s;
    }
  }

  if (serial) {
    std::vector<uint64_t> ks;
    for (const Walk& w : walks)
      if (w.sample != kNoSample) ks.push_back(w.sample);
    rows_of_isa_samples(ks.data(), ks.size());
    size_t k = 0;
    for (Walk& w : walks) {
      uint64_t row = w.sample != kNoSample ? ks[k++] : w.row;
      for (uint64_t j = w.steps; j > 0; --j) {
        uint8_t c;
        row = lf(row, c);
        if (j <= w.keep) out[w.dst + j - 1] = static_cast<char>(c);
      }
    }
    return out;
  }
  // Split the walks into one contiguous share per thread, balanced by steps.
  uint64_t total_steps = 0;
  for (const Walk& w : walks) total_steps += w.steps;
  n_threads = static_cast<unsigned>(std::min<uint64_t>(n_threads, walks.size()));
  std::vector<size_t> bounds{0};
  uint64_t acc = 0;
  for (size_t j = 0; j < walks.size() && bounds.size() < n_threads; ++j) {
    acc += walks[j].steps;
    if (acc * n_threads >= total_steps * bounds.size()) bounds.push_back(j + 1);
  }
  bounds.push_back(walks.size());
  if (bounds.size() == 2) {
    run_walks(walks.data(), walks.size(), group, out.data());
    return out;
  }
  run_on_threads(bounds.size() - 1, [&](size_t t) {
    run_walks(walks.data() + bounds[t], bounds[t + 1] - bounds[t], group, out.data());
  });
  return out;
}

// Sets the row of every walk that starts at an ISA sample (one batched lookup).
void Shard::resolve_rows(Walk* walks, size_t n) const {
  std::vector<uint64_t> ks;
  for (size_t j = 0; j < n; ++j)
    if (walks[j].sample != kNoSample) ks.push_back(walks[j].sample);
  rows_of_isa_samples(ks.data(), ks.size());
  size_t k = 0;
  for (size_t j = 0; j < n; ++j)
    if (walks[j].sample != kNoSample) walks[j].row = ks[k++];
}

// Many walks at once, one LF step of all of them per round, in order of their rows: the
// wavelet tree is then read level by level, each node front to back with prefetching
// (WaveletTree::access_many), instead of one dependent cache miss and page walk per level and
// step. The next round's order comes for free: rows C[c] + rank grouped by c are sorted.
void Shard::run_walks_sorted(Walk* walks, size_t n, char* out) const {
  resolve_rows(walks, n);
  // Output bytes gather in `bytes` and go out 8 at a time (one random write per 8 steps).
  struct State {
    uint64_t row, dst, bytes, left, keep;
  };
  std::vector<State> state(n);
  std::vector<std::vector<uint64_t>> lists(bwt_.n_nodes()), leaves(256);
  lists[0].reserve(n);
  for (size_t j = 0; j < n; ++j) {
    state[j] = {walks[j].row, walks[j].dst, 0, walks[j].steps, walks[j].keep};
    lists[0].push_back(walks[j].row << 32 | j);
  }
  std::sort(lists[0].begin(), lists[0].end());
  std::vector<uint64_t> next;
  while (!lists[0].empty()) {
    bwt_.access_many(lists.data(), leaves.data());
    next.clear();
    for (int c = 0; c < 256; ++c) {
      std::vector<uint64_t>& leaf = leaves[c];
      const size_t m = leaf.size();
      for (size_t k = 0; k < m; ++k) {
        if (k + 8 < m) __builtin_prefetch(&state[leaf[k + 8] & 0xFFFFFFFFu]);
        const uint64_t id = leaf[k] & 0xFFFFFFFFu;
        State& st = state[id];
        uint64_t r = leaf[k] >> 32;
        if (c == kSeparator && st.row > primary_) --r;  // as in lf()
        st.row = C_[c] + r;
        const uint64_t at = st.left--;  // the byte's place in the walk, plus one
        if (at <= st.keep) {
          const uint64_t p = at - 1;
          st.bytes |= static_cast<uint64_t>(c) << (8 * (p & 7));
          if ((p & 7) == 0) {  // the lowest byte of an 8-byte group: write the group
            std::memcpy(out + st.dst + p, &st.bytes, std::min<uint64_t>(8, st.keep - p));  // little-endian
            st.bytes = 0;
          }
        }
        if (st.left > 0) next.push_back(st.row << 32 | id);
      }
      leaf.clear();
    }
    lists[0].swap(next);
  }
}

void Shard::run_walks(Walk* walks, size_t n, size_t group, char* out) const {
  if (n >= kSortedWalks) {
    run_walks_sorted(walks, n, out);
    return;
  }
  resolve_rows(walks, n);
  struct Lane : LfLane {
    const Walk* w;
    uint64_t j;  // steps left
  };
  std::vector<Lane> lanes;
  size_t next = 0;
  for (; next < n && lanes.size() < group; ++next) {
    Lane l;
    l.row = walks[next].row;
    l.w = &walks[next];
    l.j = walks[next].steps;
    lanes.push_back(l);
  }
  lockstep_lf(lanes, [&](Lane& l, uint8_t c) {
    if (l.j <= l.w->keep) out[l.w->dst + l.j - 1] = static_cast<char>(c);
    if (--l.j > 0) return true;
    if (next == n) return false;
    l.w = &walks[next++];
    l.row = l.w->row;
    l.j = l.w->steps;
    return true;
  });
}

std::vector<uint64_t> Shard::count_windows(std::string_view text, const int64_t* starts, const int64_t* lengths,
                                           size_t n_windows, bool existence_only, size_t group,
                                           unsigned threads) const {
  const std::vector<Range> ranges = search_windows(text, starts, lengths, n_windows, group, threads);
  std::vector<uint64_t> out(n_windows);
  for (size_t i = 0; i < n_windows; ++i) out[i] = ranges[i].empty() ? 0 : existence_only ? 1 : ranges[i].hi - ranges[i].lo;
  return out;
}

void Shard::window_ranges(std::string_view text, const int64_t* starts, const int64_t* lengths, size_t n_windows,
                          uint64_t* lo, uint64_t* hi, size_t group, unsigned threads) const {
  const std::vector<Range> ranges = search_windows(text, starts, lengths, n_windows, group, threads);
  for (size_t i = 0; i < n_windows; ++i) {
    lo[i] = ranges[i].empty() ? 0 : ranges[i].lo;
    hi[i] = ranges[i].empty() ? 0 : ranges[i].hi;
  }
}

std::vector<Shard::Range> Shard::search_windows(std::string_view text, const int64_t* starts, const int64_t* lengths,
                                                size_t n_windows, size_t group, unsigned threads) const {
  check_windows(text, starts, lengths, n_windows);
  // Group windows by end and extend one backward search per end, shortest window first.
  SortedWindows w{text, starts, std::vector<int64_t>(n_windows), std::vector<size_t>(n_windows), {}};
  for (size_t i = 0; i < n_windows; ++i) w.ends[i] = starts[i] + lengths[i];
  std::iota(w.order.begin(), w.order.end(), 0);
  std::sort(w.order.begin(), w.order.end(), [&](size_t a, size_t b) {
    return w.ends[a] != w.ends[b] ? w.ends[a] < w.ends[b] : starts[a] > starts[b];
  });
  for (size_t k = 0; k < n_windows; ++k)
    if (k == 0 || w.ends[w.order[k]] != w.ends[w.order[k - 1]]) w.bounds.push_back(k);
  w.bounds.push_back(n_windows);
  std::vector<Range> out(n_windows, Range{0, 0});
  // Overlapping windows (several ends, run serially by auto_group) find their lines in cache.
  const bool picked = group == kAutoGroup;
  if (picked) group = auto_group(w);
  const bool overlapping = picked && group == 1 && w.bounds.size() > 2;
  // Threads take contiguous runs of end groups, balanced by the steps their longest windows may
  // need (a group's last window is its longest). Each run keeps its own absent shortcut.
  const size_t n_groups = w.bounds.size() - 1;
  std::vector<uint64_t> work(n_groups + 1, 0);
  for (size_t g = 0; g < n_groups; ++g) {
    const size_t last = w.order[w.bounds[g + 1] - 1];
    work[g + 1] = work[g] + static_cast<uint64_t>(w.ends[last] - starts[last]);
  }
  uint64_t n_threads = threads == kAutoThreads ? std::min<uint64_t>(hardware_threads(), 1 + work[n_groups] / kStepsPerThread)
                                               : threads;
  n_threads = std::max<uint64_t>(1, std::min<uint64_t>(n_threads, n_groups));
  std::vector<size_t> cuts{0};
  for (size_t g = 1; g < n_groups && cuts.size() < n_threads; ++g)
    if (work[g] * n_threads >= work[n_groups] * cuts.size()) cuts.push_back(g);
  cuts.push_back(n_groups);
  run_on_threads(cuts.size() - 1, [&](size_t t) {
    if (group <= 1)
      count_serial(w, cuts[t], cuts[t + 1], overlapping, out.data());
    else
      count_interleaved(w, group, cuts[t], cuts[t + 1], out.data());
  });
  return out;
}

std::vector<uint64_t> Shard::count_many(const std::vector<std::string>& patterns, size_t group,
                                        unsigned threads) const {
  std::string text;
  std::vector<int64_t> starts(patterns.size()), lengths(patterns.size());
  for (size_t i = 0; i < patterns.size(); ++i) {
    if (patterns[i].empty()) throw std::invalid_argument("empty pattern (pattern " + std::to_string(i) + ")");
    starts[i] = static_cast<int64_t>(text.size());
    lengths[i] = static_cast<int64_t>(patterns[i].size());
    text += patterns[i];
  }
  // A window never spans two patterns, so the absent-substring shortcut stays within one pattern.
  // The patterns do not overlap in the text: interleave unless told otherwise.
  return count_windows(text, starts.data(), lengths.data(), patterns.size(), false,
                       group == kAutoGroup ? kDefaultGroup : group, threads);
}

// Interleaving pays when the searches touch unrelated cache lines (scattered windows: ~1.4x on a
// 1 GB index). Overlapping windows (sliding ones, ends closer than a window's length) make
// consecutive searches reuse each other's lines from L2, which a single search keeps and
// ~16 streams over different parts of the text would evict (measured ~0.6x); they stay serial.
size_t Shard::auto_group(const SortedWindows& w) {
  const size_t n_groups = w.bounds.size() - 1;
  if (n_groups < 2) return 1;
  const int64_t first = w.ends[w.order.front()], last = w.ends[w.order.back()];
  uint64_t total_length = 0;
  for (size_t k = 0; k < w.order.size(); ++k) total_length += static_cast<uint64_t>(w.ends[k] - w.starts[k]);
  const double mean_gap = static_cast<double>(last - first) / static_cast<double>(n_groups - 1);
  const double mean_length = static_cast<double>(total_length) / static_cast<double>(w.order.size());
  return mean_gap < mean_length ? 1 : kDefaultGroup;
}

// The rows of text[pos - m, pos) for the first step(s) of a search back from pos that may match
// up to `room` bytes: m = 2 from the pair table (room >= 2 and the shard has one), else m = 1 from
// C; pos moves back by m. Empty when a byte is the separator.
Shard::Range Shard::first_rows(std::string_view text, int64_t& pos, int64_t room) const {
  const auto last = static_cast<uint8_t>(text[--pos]);
  if (last == kSeparator) return {0, 0};
  if (pairs_ == nullptr || room < 2) return {C_[last], C_[last + 1]};
  const auto before = static_cast<uint8_t>(text[--pos]);
  if (before == kSeparator) return {0, 0};
  const size_t x = size_t{before} << 8 | last;
  return {pairs_[x], pairs_[x + 1]};
}

// One search per distinct end, in order of ends. absent_from is the largest p such that
// text[p, e) is absent for some end e seen so far: since ends only grow, any later window
// starting at or before p contains that absent string and counts 0.
// cached: the windows overlap, so a search's lines are mostly in cache from the one before and
// prefetching only costs instructions (rank_pair_cached); otherwise each search chains its
// prefetches as search() does.
void Shard::count_serial(const SortedWindows& w, size_t g_begin, size_t g_end, bool cached, Range* out) const {
  int64_t absent_from = -1;
  const Range all{0, C_[256]};
  for (size_t g = g_begin; g < g_end; ++g) {
    int64_t pos = w.ends[w.order[w.bounds[g]]];
    Range r = first_rows(w.text, pos, pos - w.starts[w.order[w.bounds[g]]]);  // the group's shortest window
    bool first_walk = true;
    for (size_t k = w.bounds[g]; k < w.bounds[g + 1]; ++k) {
      const size_t idx = w.order[k];
      const int64_t start = w.starts[idx];
      if (start <= absent_from) break;  // this and all longer windows of the group are absent
      while (pos > start && !r.empty()) {
        const auto c = static_cast<uint8_t>(w.text[--pos]);
        if (c == kSeparator) {
          r = {0, 0};
          break;
        }
        if (cached) {
          bwt_.rank_pair_cached(c, r.lo, r.hi);
        } else {
          bwt_.rank_pair(c, r.lo, r.hi, pos > 0 ? static_cast<uint8_t>(w.text[pos - 1]) : WaveletTree::kNoNext, C_[c],
                         first_walk);
          first_walk = false;
        }
        r = {C_[c] + r.lo, C_[c] + r.hi};
      }
      if (r.empty()) {
        absent_from = std::max(absent_from, pos);
        break;
      }
      if (r.hi > all.hi) corrupt("suffix-array range out of range");
      out[idx] = r;
    }
  }
}

// The same searches split into `group` streams of consecutive ends (each keeps its own
// absent_from, so the shortcut holds within a stream). Round-robin, each live stream takes one
// stage of its current wavelet level: prefetch the payload lines (its directory entries were
// prefetched a round earlier), then rank and prefetch the next level's directory entries. While
// one stream's lines arrive, the others compute, so ~group cache misses are in flight at once.
void Shard::count_interleaved(const SortedWindows& w, size_t group, size_t g_begin, size_t g_end,
                              Range* out) const {
  struct Stream {
    size_t g, g_stop;  // end groups still to do: [g, g_stop)
    size_t k = 0, k_end = 0;  // windows of the current group still to do (positions in order)
    int64_t pos = 0, absent_from = -1;
    Range r{0, 0};
    uint8_t c = 0;
    bool fetch_payload = false;
    WaveletTree::PairWalk walk{};
  };
  const Range all{0, C_[256]};
  // Runs the window logic up to the next extend step that needs the wavelet tree and starts its
  // walk; false when the stream has no work left.
  auto advance = [&](Stream& s) -> bool {
    for (;;) {
      if (s.k == s.k_end) {
        if (s.g == s.g_stop) return false;
        s.k = w.bounds[s.g];
        s.k_end = w.bounds[++s.g];
        s.pos = w.ends[w.order[s.k]];
        s.r = first_rows(w.text, s.pos, s.pos - w.starts[w.order[s.k]]);  // the group's shortest window
      }
      const size_t idx = w.order[s.k];
      const int64_t start = w.starts[idx];
      if (start <= s.absent_from) {  // this and all longer windows of the group are absent
        s.k = s.k_end;
        continue;
      }
      if (s.r.empty()) {
        s.absent_from = std::max(s.absent_from, s.pos);
        s.k = s.k_end;
        continue;
      }
      if (s.pos > start) {
        const auto c = static_cast<uint8_t>(w.text[--s.pos]);
        if (c == kSeparator) {
          s.r = {0, 0};
          continue;
        }
        s.walk.lo = s.r.lo;
        s.walk.hi = s.r.hi;
        if (!bwt_.walk_begin(c, s.walk)) {
          s.r = {0, 0};
          continue;
        }
        s.c = c;
        s.fetch_payload = true;
        return true;
      }
      if (s.r.hi > all.hi) corrupt("suffix-array range out of range");
      out[idx] = s.r;
      ++s.k;
    }
  };
  const size_t n_groups = g_end - g_begin;
  const size_t n_streams = std::min(group, n_groups);
  std::vector<Stream> live;
  live.reserve(n_streams);
  for (size_t i = 0; i < n_streams; ++i) {
    Stream s;
    s.g = g_begin + n_groups * i / n_streams;
    s.g_stop = g_begin + n_groups * (i + 1) / n_streams;
    if (advance(s)) live.push_back(s);
  }
  lockstep_search(live, [&](Stream& s, Range next) {
    s.r = next;
    return advance(s);
  });
}

std::vector<uint8_t> Shard::windows_present(std::string_view text, const int64_t* starts, const int64_t* lengths,
                                            size_t n_windows, unsigned threads, std::vector<Match>* matches) const {
  check_windows(text, starts, lengths, n_windows);
  for (size_t i = 1; i < n_windows; ++i)
    if (starts[i] < starts[i - 1] || starts[i] + lengths[i] < starts[i - 1] + lengths[i - 1])
      throw std::invalid_argument("window " + std::to_string(i) + " starts or ends before window " +
                                  std::to_string(i - 1) + ": windows_present needs windows in text order");
  // Runs of overlapping windows (the next one starts before this one ends): a backward search
  // never needs to cross from one run into another.
  std::vector<size_t> runs{0};
  for (size_t i = 1; i < n_windows; ++i)
    if (starts[i] >= starts[i - 1] + lengths[i - 1]) runs.push_back(i);
  runs.push_back(n_windows);
  const size_t n_runs = runs.size() - 1;
  // Threads take contiguous shares of runs, balanced by the text they cover (about one search
  // step a byte where the text occurs).
  std::vector<uint64_t> work(n_runs + 1, 0);
  for (size_t r = 0; r < n_runs; ++r) {
    const size_t last = runs[r + 1] - 1;
    work[r + 1] = work[r] + static_cast<uint64_t>(starts[last] + lengths[last] - starts[runs[r]]);
  }
  uint64_t n_threads = threads == kAutoThreads ? std::min<uint64_t>(hardware_threads(), 1 + work[n_runs] / kStepsPerThread)
                                               : threads;
  n_threads = std::max<uint64_t>(1, std::min<uint64_t>(n_threads, n_runs));
  std::vector<size_t> cuts{0};
  for (size_t r = 1; r < n_runs && cuts.size() < n_threads; ++r)
    if (work[r] * n_threads >= work[n_runs] * cuts.size()) cuts.push_back(r);
  cuts.push_back(n_runs);
  std::vector<uint8_t> out(n_windows, 2);
  if (n_windows == 0) return out;
  std::vector<std::vector<Match>> found(cuts.size() - 1);
  run_on_threads(cuts.size() - 1, [&](size_t t) {
    present_runs(text, starts, lengths, runs.data(), cuts[t], cuts[t + 1], out.data(), matches ? &found[t] : nullptr);
  });
  if (matches) {
    matches->clear();
    for (const auto& f : found) matches->insert(matches->end(), f.begin(), f.end());
  }
  if (std::find(out.begin(), out.end(), uint8_t{2}) != out.end()) throw std::logic_error("windows_present: a window left undecided");
  return out;
}

// One backward search from the end of window j, stopped at the start of window i (the first
// window not decided yet), either gets there, and then text[start i, end j) occurs and so do the
// windows i..j inside it; or it stops at p with text[p + 1, end j) occurring and text[p, end j)
// absent: the windows inside the first occur, and every window that starts at or before p and
// ends at or after end j (window j and later ones starting by p) contains the second and is
// absent. Each search decides window i or window j at least. How far ahead j is (`ahead`
// windows) adapts: it doubles after a search got back to window i (text copied verbatim: about
// one step a byte, not one a byte and window), halves after one that stopped short in a run being
// bisected, and is 0 in text that does not occur (each search then rules out the windows up to
// p, as count_windows' absent shortcut does). The first search of a run covers all of it, so a
// run copied whole costs one step a byte.
//
// present_runs does this for the runs [r_begin, r_end) of `runs` (window ids where runs begin, and the end), kDefaultGroup
// runs at a time in lockstep: each lane's backward search takes one stage of its current wavelet
// level per round (prefetch the payload lines, then rank and prefetch the next level's directory),
// so the cache misses of different runs' searches overlap, as in count_interleaved.
void Shard::present_runs(std::string_view text, const int64_t* starts, const int64_t* lengths, const size_t* runs,
                         size_t r_begin, size_t r_end, uint8_t* out, std::vector<Match>* matches) const {
  constexpr uint8_t kUndecided = 2;
  auto end_of = [&](size_t k) { return starts[k] + lengths[k]; };
  const Range all{0, C_[256]};
  struct Lane {
    size_t i = 0, end = 0, ahead = 0;  // the run's first window maybe undecided, its end, the lookahead
    bool first = true, searching = false;
    size_t j = 0;                              // the search runs from the end of window j ...
    int64_t stop = 0, last_end = 0, pos = 0;  // ... back to stop; text[pos, last_end) occurs (rows r)
    Range r{0, 0};
    uint8_t c = 0;
    bool fetch_payload = false;
    WaveletTree::PairWalk walk{};
  };
  size_t next_run = r_begin;
  // The lane's search is over: it got back to window i (pos == stop), or text[pos - 1, last_end)
  // is absent. Decides windows as the comment above says.
  auto decide = [&](Lane& l) {
    l.searching = false;
    const size_t i = l.i, j = l.j;
    const int64_t pos = l.pos, last_end = l.last_end;
    if (l.r.hi > all.hi) corrupt("suffix-array range out of range");
    if (matches && (pos == l.stop || starts[j] >= pos)) matches->push_back({pos, last_end, l.r.lo, l.r.hi});
    if (pos == l.stop) {
      std::fill(out + i, out + j + 1, uint8_t{1});
      l.i = j + 1;
      l.ahead = 2 * l.ahead + 1;
    } else {
      const int64_t p = pos - 1;  // text[p, last_end) is absent
      size_t k = j + 1;           // windows k..j lie inside text[pos, last_end)
      while (k > i && starts[k - 1] >= pos) out[--k] = 1;
      if (k <= j) {
        l.ahead = (k - i) / 2;  // windows i..k-1 left: bisect towards where the match begins
      } else {
        for (size_t m = j; m < l.end && starts[m] <= p; ++m) out[m] = 0;
        for (size_t m = j; m > i && end_of(m - 1) >= last_end;) out[--m] = 0;  // starts[m - 1] <= starts[j] <= p
        l.ahead = l.first ? 0 : (j - i) / 2;
      }
    }
    l.first = false;
  };
  // Runs the lane up to its next extend step and starts that step's walk; false when no run is left.
  auto advance = [&](Lane& l) -> bool {
    for (;;) {
      if (!l.searching) {
        while (l.i < l.end && out[l.i] != kUndecided) ++l.i;
        if (l.i >= l.end) {
          if (next_run == r_end) return false;
          l.i = runs[next_run];
          l.end = runs[next_run + 1];
          ++next_run;
          l.ahead = l.end - l.i - 1;  // the first search covers the whole run
          l.first = true;
          continue;
        }
        size_t j = l.i;
        while (j + 1 < l.end && j - l.i < l.ahead && out[j + 1] == kUndecided) ++j;
        l.j = j;
        l.stop = starts[l.i];
        l.pos = l.last_end = end_of(j);
        l.r = all;
        l.searching = true;
      }
      if (l.pos == l.stop) {
        decide(l);
        continue;
      }
      const auto c = static_cast<uint8_t>(text[l.pos - 1]);
      l.walk.lo = l.r.lo;
      l.walk.hi = l.r.hi;
      if (c == kSeparator || !bwt_.walk_begin(c, l.walk)) {  // c + text[pos, last_end) is absent
        decide(l);
        continue;
      }
      l.c = c;
      l.fetch_payload = true;
      return true;
    }
  };
  std::vector<Lane> live;
  live.reserve(kDefaultGroup);
  for (size_t k = 0; k < kDefaultGroup; ++k) {
    Lane l;
    if (!advance(l)) break;
    live.push_back(l);
  }
  lockstep_search(live, [&](Lane& l, Range next) {
    if (next.empty()) {
      decide(l);
    } else {
      l.r = next;
      --l.pos;
    }
    return advance(l);
  });
}

}  // namespace rtv

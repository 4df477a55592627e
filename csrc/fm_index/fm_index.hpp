// Query side of an FM-index shard: counting, locating and extracting over the mapped file.
// Every method is const and keeps its state on the stack, so one Shard serves many threads.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "elias_fano.hpp"
#include "int_vector.hpp"
#include "inverse_permutation.hpp"
#include "shard_file.hpp"
#include "wavelet.hpp"

namespace rtv {

struct Occurrence {
  uint64_t doc;     // local document id
  uint64_t offset;  // byte offset within the document
  bool operator<(const Occurrence& o) const { return doc != o.doc ? doc < o.doc : offset < o.offset; }
  bool operator==(const Occurrence& o) const { return doc == o.doc && offset == o.offset; }
};

class Shard {
 public:
  explicit Shard(const std::string& path, bool verify = true);

  uint64_t n_docs() const { return file_.info().n_docs; }
  uint64_t text_bytes() const { return file_.info().text_bytes; }
  uint64_t index_bytes() const { return file_.file_bytes(); }
  uint32_t sa_sample() const { return file_.info().sa_sample; }
  uint32_t isa_sample() const { return file_.info().isa_sample; }
  uint32_t format_version() const { return file_.info().version; }
  uint64_t checksum() const { return file_.info().body_checksum; }
  // Whether the shard has the pair table (shards written before it do not; they count the same,
  // a backward-search step slower).
  bool has_pair_table() const { return pairs_ != nullptr; }
  uint64_t doc_start(uint64_t doc) const;  // byte position of the document in the shard text
  uint64_t doc_length(uint64_t doc) const;
  std::vector<uint64_t> doc_lengths() const;

  // Occurrences of pattern (0 if it contains the 0xFF separator). Empty pattern: invalid_argument.
  uint64_t count(std::string_view pattern) const;
  // Rows [offset, offset + limit) of the pattern's suffix-array range, sorted by (doc, offset).
  std::vector<Occurrence> locate(std::string_view pattern, uint64_t offset, uint64_t limit) const;
  // Sorted distinct documents containing pattern.
  std::vector<uint64_t> docs(std::string_view pattern) const;
  // Sorted documents matching a conjunction of disjunctions of patterns.
  std::vector<uint64_t> cnf(const std::vector<std::vector<std::string>>& clauses) const;
  // Text back (through extract_ranges).
  std::string extract(uint64_t doc) const;
  // Bytes [offset, offset + width) of a document, clipped to its end.
  std::string snippet(uint64_t doc, uint64_t offset, uint64_t width) const;
  // Bytes [starts[i], ends[i]) of document docs[i] for every i, concatenated; offsets receives
  // n + 1 positions into the result (range i is [offsets[i], offsets[i + 1])). An end past the
  // document is clipped to it; a start past it is out_of_range, a negative value or end < start
  // invalid_argument. The ranges are cut at ISA-sampled positions into independent backward LF
  // walks, run `group` at a time in lockstep with prefetching (as count_windows), on up to
  // `threads` threads (kAutoThreads: the hardware's, for requests large enough to pay). group 1
  // keeps the one-walk-per-range path: one thread, each range walked from the nearest known row
  // at or after its end (an ISA sample or the document's end). Same bytes either way.
  static constexpr unsigned kAutoThreads = 0;
  std::string extract_ranges(const int64_t* docs, const int64_t* starts, const int64_t* ends, size_t n,
                             std::vector<uint64_t>& offsets, size_t group = kDefaultGroup,
                             unsigned threads = kAutoThreads) const;
  // Occurrences (or 0/1 with existence_only) of text[starts[i], starts[i] + lengths[i]).
  // group > 1 runs that many backward searches in lockstep, prefetching each one's next cache
  // lines so their misses overlap; group 1 runs them one after another; kAutoGroup picks by the
  // windows' layout (see auto_group). Same results either way.
  // threads: up to that many threads, each taking a contiguous share of the windows' ends
  // (kAutoThreads: the hardware's, one per kStepsPerThread search steps at most).
  static constexpr size_t kDefaultGroup = 16;
  static constexpr size_t kAutoGroup = 0;
  static constexpr uint64_t kStepsPerThread = 8192;
  std::vector<uint64_t> count_windows(std::string_view text, const int64_t* starts, const int64_t* lengths,
                                      size_t n_windows, bool existence_only, size_t group = kAutoGroup,
                                      unsigned threads = kAutoThreads) const;
  // The suffix-array rows [lo[i], hi[i]) of the same windows (both 0 where a window is absent),
  // searched as count_windows does; locate_rows turns rows into occurrences.
  void window_ranges(std::string_view text, const int64_t* starts, const int64_t* lengths, size_t n_windows,
                     uint64_t* lo, uint64_t* hi, size_t group = kAutoGroup, unsigned threads = kAutoThreads) const;
  // The occurrence of each suffix-array row (out_of_range past the last row). Walks to the
  // nearest suffix-array samples run `group` at a time in lockstep, as extract_ranges' walks.
  std::vector<Occurrence> locate_rows(const int64_t* rows, size_t n, size_t group = kDefaultGroup) const;
  // 1 where window i = text[starts[i], starts[i] + lengths[i]) occurs, else 0 (as count_windows
  // with existence_only), for windows in text order: starts and ends both nondecreasing (e.g. the
  // sliding windows of texts laid end to end; invalid_argument otherwise). Overlapping windows
  // are decided by maximal matches instead of one search each (see present_run); threads as
  // count_windows, each taking whole runs of overlapping windows. With `matches`, it receives
  // the strings the searches found to occur that hold a window, with their suffix-array rows (so
  // a match need not be searched again), in text order.
  struct Match {
    int64_t start, end;  // text[start, end) occurs
    uint64_t lo, hi;     // its rows
  };
  std::vector<uint8_t> windows_present(std::string_view text, const int64_t* starts, const int64_t* lengths,
                                       size_t n_windows, unsigned threads = kAutoThreads,
                                       std::vector<Match>* matches = nullptr) const;
  // count() of every pattern, through count_windows (so interleaved and threaded as above).
  std::vector<uint64_t> count_many(const std::vector<std::string>& patterns, size_t group = kDefaultGroup,
                                   unsigned threads = kAutoThreads) const;

 private:
  struct Range {
    uint64_t lo, hi;
    bool empty() const { return lo >= hi; }
  };
  Range search(std::string_view pattern) const;
  // The rows a search back from text position pos starts with, from C or the pair table (see the .cpp).
  Range first_rows(std::string_view text, int64_t& pos, int64_t room) const;
  // The two engines of count_windows. order: window ids sorted by (end, start descending);
  // order[bounds[g], bounds[g + 1]) are the windows of the g-th distinct end.
  struct SortedWindows {
    std::string_view text;
    const int64_t* starts;
    std::vector<int64_t> ends;
    std::vector<size_t> order, bounds;
  };
  std::vector<Range> search_windows(std::string_view text, const int64_t* starts, const int64_t* lengths,
                                    size_t n_windows, size_t group, unsigned threads) const;
  static size_t auto_group(const SortedWindows& w);
  // windows_present on the runs of overlapping windows [runs[r], runs[r + 1]) for r in
  // [r_begin, r_end), in lockstep; out[k] is 2 until decided.
  void present_runs(std::string_view text, const int64_t* starts, const int64_t* lengths, const size_t* runs,
                    size_t r_begin, size_t r_end, uint8_t* out, std::vector<Match>* matches) const;
  // Both take the end groups [g_begin, g_end) (ids into bounds).
  void count_serial(const SortedWindows& w, size_t g_begin, size_t g_end, bool cached, Range* out) const;
  void count_interleaved(const SortedWindows& w, size_t group, size_t g_begin, size_t g_end, Range* out) const;
  // Backward-search steps in lockstep, one per lane (count_interleaved, present_runs): a lane has
  // begun a WaveletTree::PairWalk `walk` for byte `c` with `fetch_payload` set; per round it
  // prefetches the payload lines, or ranks one level (which prefetches the next level's
  // directory), so while one lane's lines arrive the others compute. When its walk is over,
  // step(lane, rows prefixed by c + the lane's string) says whether the lane goes on (its next walk
  // begun) or retires.
  template <class Lane, class Step>
  void lockstep_search(std::vector<Lane>& lanes, const Step& step) const {
    while (!lanes.empty()) {
      for (size_t i = 0; i < lanes.size();) {
        Lane& l = lanes[i];
        if (l.fetch_payload) {
          bwt_.walk_prefetch(l.walk);
          l.fetch_payload = false;
        } else if (!bwt_.walk_level(l.walk)) {
          l.fetch_payload = true;
        } else if (!step(l, Range{C_[l.c] + l.walk.lo, C_[l.c] + l.walk.hi})) {
          lanes[i] = lanes.back();
          lanes.pop_back();
          continue;
        }
        ++i;
      }
    }
  }
  // LF mapping: the row of the suffix one position earlier; c receives the byte stepped over.
  uint64_t lf(uint64_t row, uint8_t& c) const {
    uint64_t r;
    c = bwt_.access_rank(row, r);
    if (c == kSeparator && row > primary_) --r;  // the sentinel is stored as 0xFF at primary_
    return C_[c] + r;
  }
  uint64_t text_position(uint64_t row) const;
  // One backward LF walk of extract_ranges: produces the text bytes at positions
  // [lo, lo + steps) from the row of position lo + steps, keeping those below lo + keep into
  // out[dst, dst + keep). sample: the ISA sample whose row starts the walk (kNoSample: row is set).
  struct Walk {
    uint64_t row, sample, steps, keep, dst;
  };
  static constexpr uint64_t kNoSample = ~uint64_t{0};
  void run_walks(Walk* walks, size_t n, size_t group, char* out) const;
  // Lockstep LF walks, one per lane: per LF step, per wavelet level, a lane first prefetches the
  // payload lines (its directory entry was prefetched a round earlier), then ranks and
  // prefetches the next level's directory entry. While one lane's lines arrive, the others
  // compute, so ~lanes.size() cache misses are in flight at once. After each step, with
  // lane.row moved one position back, step(lane, byte stepped over) says whether the lane goes
  // on from lane.row (its walk's next row, or the first row of a new walk it took) or retires.
  struct LfLane {
    uint64_t row = 0;
    WaveletTree::AccessWalk a{};
    bool fetch_payload = true;
  };
  template <class Lane, class Step>
  void lockstep_lf(std::vector<Lane>& lanes, const Step& step) const {
    for (Lane& l : lanes) bwt_.access_begin(l.row, l.a);
    while (!lanes.empty()) {
      for (size_t i = 0; i < lanes.size();) {
        Lane& l = lanes[i];
        uint8_t c;
        if (l.fetch_payload) {
          bwt_.access_prefetch(l.a);
          l.fetch_payload = false;
        } else if (!bwt_.access_level(l.a, c)) {
          l.fetch_payload = true;
        } else {
          uint64_t r = l.a.i;
          if (c == kSeparator && l.row > primary_) --r;  // as in lf()
          l.row = C_[c] + r;
          if (!step(l, c)) {
            lanes[i] = lanes.back();
            lanes.pop_back();
            continue;
          }
          bwt_.access_begin(l.row, l.a);
          l.fetch_payload = true;
        }
        ++i;
      }
    }
  }
  void run_walks_sorted(Walk* walks, size_t n, char* out) const;
  void resolve_rows(Walk* walks, size_t n) const;
  // From this many walks on, run_walks_sorted beats lockstep lanes.
  static constexpr uint64_t kSortedWalks = 4096;
  // rows[i] = the row of text position ks[i] * isa_sample (ks in place), interleaved for kind 2.
  void rows_of_isa_samples(uint64_t* ks, size_t n) const;
  uint64_t doc_of(uint64_t pos) const {
    const uint64_t r = doc_starts_.rank(pos + 1);
    if (r == 0) corrupt("document starts out of order");  // document 0 starts at 0 (checked on load)
    return r - 1;
  }
  void check_doc(uint64_t doc) const;
  // The distinct documents (ascending) holding rows r; with `within`, only those of `within`
  // (ascending, distinct). Stops once every document that could be found has been.
  std::vector<uint64_t> docs_in_range(Range r, const std::vector<uint64_t>* within = nullptr) const;

  static constexpr uint8_t kSeparator = 0xFF;
  ShardFile file_;
  const uint64_t* C_ = nullptr;  // C_[c] = first row whose suffix starts with byte c; C_[256] = rows
  uint64_t primary_ = 0;         // row of the suffix at text position 0
  // pairs_[a * 256 + b]: the first row prefixed by a and a byte >= b (build.hpp's pair_rows), so a
  // search starts from its last two bytes' rows; null in shards written before the table.
  const uint32_t* pairs_ = nullptr;
  WaveletTree bwt_;
  EliasFano sa_marks_;
  IntVector sa_values_;
  // ISA samples, by kind: 0 = rows (isa_sample not a multiple of sa_sample), 2 = shortcuts
  // inverting sa_values_ (isa_sample a multiple of sa_sample). Other kinds are refused on load.
  uint64_t isa_kind_ = 0;
  IntVector isa_;
  InversePermutation isa_shortcuts_;
  EliasFano doc_starts_;
  IntVector doc_end_rows_;
};

}  // namespace rtv

#include "fm_index.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace rtv {

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
    if (isa_kind_ > 2) in.fail("unknown inverse-sample kind");
    if (isa_kind_ == 2) {
      if (info.isa_sample % info.sa_sample != 0) in.fail("ISA shortcuts need isa_sample to be a multiple of sa_sample");
      isa_shortcuts_.load(in, sa_values_.size());
    } else {
      isa_.load(in);
      if (isa_.size() != (info.text_bytes + info.isa_sample - 1) / info.isa_sample) in.fail("wrong sample count");
    }
  }
  {
    Reader in = file_.section(kSectionDocStarts);
    doc_starts_.load(in);
    if (doc_starts_.size() != info.n_docs || doc_starts_.universe() != info.text_bytes)
      in.fail("document starts do not match the header");
  }
  {
    Reader in = file_.section(kSectionDocEndRows);
    doc_end_rows_.load(in);
    if (doc_end_rows_.size() != info.n_docs) in.fail("wrong document count");
  }
}

uint64_t Shard::doc_start(uint64_t doc) const {
  check_doc(doc);
  return doc_starts_.select(doc);
}

uint64_t Shard::doc_length(uint64_t doc) const {
  const uint64_t start = doc_start(doc);
  const uint64_t next = doc + 1 < n_docs() ? doc_starts_.select(doc + 1) : text_bytes();
  return next - start - 1;  // minus the separator
}

std::vector<uint64_t> Shard::doc_lengths() const {
  std::vector<uint64_t> out(n_docs());
  uint64_t start = doc_starts_.select(0);
  for (uint64_t d = 0; d < out.size(); ++d) {
    const uint64_t next = d + 1 < out.size() ? doc_starts_.select(d + 1) : text_bytes();
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
  const auto c0 = static_cast<uint8_t>(pattern.back());
  Range r{C_[c0], C_[c0 + 1]};
  for (size_t k = pattern.size() - 1; k > 0 && !r.empty(); --k) r = extend(r, static_cast<uint8_t>(pattern[k - 1]));
  return r.empty() ? Range{0, 0} : r;
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
    if (sa_marks_.contains(row, k)) return sa_values_[k] * s + steps;
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
    const uint64_t doc = doc_of(pos);
    out.push_back({doc, pos - doc_starts_.select(doc)});
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint64_t> Shard::docs_in_range(Range r) const {
  std::vector<uint64_t> out;
  out.reserve(r.hi - r.lo);
  for (uint64_t row = r.lo; row < r.hi; ++row) out.push_back(doc_of(text_position(row)));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
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
  std::vector<uint64_t> result;
  for (size_t i = 0; i < resolved.size(); ++i) {
    std::vector<uint64_t> docs;
    for (const Range& r : resolved[i].ranges) {
      std::vector<uint64_t> d = docs_in_range(r);
      docs.insert(docs.end(), d.begin(), d.end());
    }
    std::sort(docs.begin(), docs.end());
    docs.erase(std::unique(docs.begin(), docs.end()), docs.end());
    if (i == 0) {
      result = std::move(docs);
    } else {
      std::vector<uint64_t> both;
      std::set_intersection(result.begin(), result.end(), docs.begin(), docs.end(), std::back_inserter(both));
      result = std::move(both);
    }
    if (result.empty()) break;
  }
  return result;
}

std::string Shard::extract(uint64_t doc) const {
  const uint64_t len = doc_length(doc);
  std::string out(len, '\0');
  uint64_t row = doc_end_rows_[doc];
  for (uint64_t k = len; k > 0; --k) {
    uint8_t c;
    row = lf(row, c);
    out[k - 1] = static_cast<char>(c);
  }
  return out;
}

std::string Shard::snippet(uint64_t doc, uint64_t offset, uint64_t width) const {
  const uint64_t len = doc_length(doc);
  if (offset > len)
    throw std::out_of_range("offset " + std::to_string(offset) + " is beyond the end of document " +
                            std::to_string(doc) + " (" + std::to_string(len) + " bytes)");
  const uint64_t end = offset + std::min(width, len - offset);
  if (end == offset) return {};
  const uint64_t start = doc_starts_.select(doc);
  // Start from the nearest known row at or after the end: an ISA sample or the separator.
  const uint64_t s = isa_sample();
  const uint64_t sampled = (start + end + s - 1) / s * s;
  uint64_t pos, row;
  if (end == len || sampled >= start + len) {
    pos = start + len;
    row = doc_end_rows_[doc];
  } else {
    pos = sampled;
    row = row_of_isa_sample(sampled / s);
  }
  std::string out(end - offset, '\0');
  for (; pos > start + offset; --pos) {
    uint8_t c;
    row = lf(row, c);
    if (pos <= start + end) out[pos - 1 - start - offset] = static_cast<char>(c);
  }
  return out;
}

std::vector<uint64_t> Shard::count_windows(std::string_view text, const int64_t* starts, const int64_t* lengths,
                                           size_t n_windows, bool existence_only) const {
  for (size_t i = 0; i < n_windows; ++i) {
    if (starts[i] < 0 || lengths[i] <= 0 || static_cast<uint64_t>(starts[i]) > text.size() ||
        static_cast<uint64_t>(lengths[i]) > text.size() - static_cast<uint64_t>(starts[i]))
      throw std::invalid_argument("window " + std::to_string(i) + " (start " + std::to_string(starts[i]) +
                                  ", length " + std::to_string(lengths[i]) + ") is empty or outside the text");
  }
  // Group windows by end and extend one backward search per end, shortest window first.
  std::vector<size_t> order(n_windows);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int64_t ea = starts[a] + lengths[a], eb = starts[b] + lengths[b];
    return ea != eb ? ea < eb : starts[a] > starts[b];
  });
  std::vector<uint64_t> out(n_windows, 0);
  // Largest p such that text[p, e) is absent for some end e seen so far: since ends only grow,
  // any later window starting at or before p contains that absent string and counts 0.
  int64_t absent_from = -1;
  const Range all{0, C_[256]};
  for (size_t g = 0; g < n_windows;) {
    const int64_t end = starts[order[g]] + lengths[order[g]];
    size_t g_end = g;
    while (g_end < n_windows && starts[order[g_end]] + lengths[order[g_end]] == end) ++g_end;
    Range r = all;
    int64_t pos = end;
    for (size_t w = g; w < g_end; ++w) {
      const size_t idx = order[w];
      const int64_t start = starts[idx];
      if (start <= absent_from) break;  // this and all longer windows of the group are absent
      while (pos > start && !r.empty()) r = extend(r, static_cast<uint8_t>(text[--pos]));
      if (r.empty()) {
        absent_from = std::max(absent_from, pos);
        break;
      }
      out[idx] = existence_only ? 1 : r.hi - r.lo;
    }
    g = g_end;
  }
  return out;
}

}  // namespace rtv

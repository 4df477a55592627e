#include "build.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "checksum.hpp"
#include "elias_fano.hpp"
#include "int_vector.hpp"
#include "inverse_permutation.hpp"
#include "sais.hpp"
#include "shard_file.hpp"
#include "wavelet.hpp"

namespace rtv {
namespace {

// Gives the whole pages inside [begin, end) back to the system (their contents are dead); what
// is written there later gets fresh zero pages. Only a saving: nothing depends on it happening.
void release_pages(void* begin, void* end) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t b = (reinterpret_cast<uintptr_t>(begin) + page - 1) & ~(page - 1);
  const uintptr_t e = reinterpret_cast<uintptr_t>(end) & ~(page - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

}  // namespace

std::vector<uint32_t> pair_rows(const uint8_t* text, size_t n, const std::vector<uint64_t>& C) {
  // Rows prefixed by byte a (a != 0xFF) are sorted by the byte after it, and every such suffix
  // has one (the text ends with 0xFF), so counting the text's two-byte strings gives them.
  std::vector<uint64_t> follows(256 * 256, 0);
  for (size_t i = 0; i + 1 < n; ++i) ++follows[size_t{text[i]} << 8 | text[i + 1]];
  std::vector<uint32_t> out(kPairRows);
  for (size_t a = 0; a < 255; ++a) {
    uint64_t row = C[a];
    for (size_t b = 0; b < 256; ++b) {
      out[a << 8 | b] = static_cast<uint32_t>(row);
      row += follows[a << 8 | b];
    }
  }
  return out;
}

void build_shard(const uint8_t* text, size_t n, const std::string& path, uint32_t sa_sample, uint32_t isa_sample,
                 const BuildProgress& progress) {
  constexpr uint8_t kSeparator = 0xFF;
  if (n == 0) throw std::invalid_argument("cannot build a shard from empty text");
  if (n > 0x7FFFFFFFu) throw std::invalid_argument("shard text must be smaller than 2 GiB; split the corpus");
  if (text[n - 1] != kSeparator) throw std::invalid_argument("shard text must end with a 0xFF document separator");
  if (sa_sample == 0 || isa_sample == 0 || sa_sample > (1u << 20) || isa_sample > (1u << 20))
    throw std::invalid_argument("sample rates must be between 1 and 2^20");
  auto report = [&](const char* stage, uint64_t done, uint64_t total) {
    if (progress) progress(stage, done, total);
  };

  std::vector<uint32_t> doc_starts;
  doc_starts.reserve(static_cast<size_t>(std::count(text, text + n, kSeparator)));  // no growth slack at the peak
  for (const uint8_t* p = text; p < text + n;) {
    doc_starts.push_back(static_cast<uint32_t>(p - text));
    p = static_cast<const uint8_t*>(std::memchr(p, kSeparator, static_cast<size_t>(text + n - p))) + 1;
  }
  const uint64_t n_docs = doc_starts.size();

  report("suffix_array", 0, n);
  std::unique_ptr<int32_t[]> own_sa(new int32_t[n]);
  int32_t* const sa = own_sa.get();
  suffix_array(text, static_cast<int32_t>(n), sa);
  report("suffix_array", n, n);

  // One pass over the rows of T$ (row 0 is the sentinel suffix) derives the BWT and samples.
  // The BWT is written over the suffix array as it is consumed, saving n bytes: byte r - 1 lies in
  // sa[(r - 1) / 4], already read when row r reads sa[r - 1] and then writes byte r - 1.
  // Behind the pass, the suffix array's bytes past the BWT written so far are dead: every
  // `release_every` rows their pages go back to the system, so the suffix array shrinks as the
  // samples grow and only the BWT's n bytes are left of it afterwards. Releasing often keeps the
  // samples taken before the first release (8 bytes per sa_sample rows) from raising the peak.
  const uint64_t rows = n + 1;
  uint8_t* const bwt = reinterpret_cast<uint8_t*>(sa);
  const uint8_t first_byte = text[n - 1];
  std::vector<uint32_t> marks, sa_values, doc_end_rows(n_docs);
  // When ISA positions are also SA-sampled positions, the ISA is the inverse of the permutation
  // sa_values (sample index -> position / sa_sample); it is stored as cycle shortcuts (kind 2)
  // rather than one value per sample. Otherwise rows are stored directly (kind 0).
  const bool isa_by_sample = isa_sample % sa_sample == 0;
  std::vector<uint32_t> isa(isa_by_sample ? 0 : (n + isa_sample - 1) / isa_sample);
  marks.reserve(n / sa_sample + 2);
  sa_values.reserve(n / sa_sample + 2);
  uint64_t primary = 0;
  const uint64_t step = std::max<uint64_t>(rows / 100, 1 << 20);
  constexpr uint64_t release_every = uint64_t{1} << 18;
  uint8_t pending = first_byte;  // bwt[r - 1], written once sa[r - 1] has been read
  for (uint64_t r = 1; r < rows; ++r) {
    const auto p = static_cast<uint32_t>(sa[r - 1]);
    if (r + 32 < rows) {  // the text byte before a suffix is a random access: fetch it ahead
      const auto ahead = static_cast<uint32_t>(sa[r + 31]);
      __builtin_prefetch(text + (ahead > 0 && ahead < n ? ahead - 1 : 0));
    }
    bwt[r - 1] = pending;
    if (p >= n) throw std::invalid_argument("suffix array value out of range");
    if (p == 0) {
      primary = r;
      pending = kSeparator;  // stands in for the sentinel; queries correct for it
    } else {
      pending = text[p - 1];
    }
    if (p % sa_sample == 0) {
      marks.push_back(static_cast<uint32_t>(r));
      sa_values.push_back(p / sa_sample);
    }
    if (!isa_by_sample && p % isa_sample == 0) isa[p / isa_sample] = static_cast<uint32_t>(r);
    if (text[p] == kSeparator) {
      const auto doc = std::upper_bound(doc_starts.begin(), doc_starts.end(), p) - doc_starts.begin() - 1;
      doc_end_rows[doc] = static_cast<uint32_t>(r);
    }
    if (r % step == 0) report("bwt", r, rows);
    // bwt[0, r) written, sa[0, r) read: bytes [r, 4r) are dead (byte r onwards is written later)
    if (r % release_every == 0) release_pages(bwt + r, sa + r);
  }
  bwt[rows - 1] = pending;
  release_pages(bwt + rows, sa + n);
  report("bwt", rows, rows);

  std::vector<uint64_t> C(257, 0);
  for (uint64_t i = 0; i < n; ++i) ++C[text[i] + 1];
  C[0] = 1;  // the sentinel row sorts first
  for (int c = 1; c <= 256; ++c) C[c] += C[c - 1];
  const std::vector<uint32_t> pairs = pair_rows(text, n, C);

  Writer body;
  std::vector<uint64_t> section_begin;
  section_begin.push_back(body.size());
  body.put_u64(primary);
  body.put_vector(C);
  body.put_vector(pairs);
  section_begin.push_back(body.size());
  WaveletTree::write(body, bwt, rows, [&](uint64_t done, uint64_t total) { report("wavelet", done, total); });
  own_sa.reset();
  section_begin.push_back(body.size());
  EliasFano::write(body, std::vector<uint64_t>(marks.begin(), marks.end()), rows);
  std::vector<uint32_t>().swap(marks);
  section_begin.push_back(body.size());
  IntVector::write(body, sa_values, IntVector::width_for(n / sa_sample));
  section_begin.push_back(body.size());
  if (isa_by_sample) {
    body.put_u64(2);
    InversePermutation::write(body, sa_values);
  } else {
    body.put_u64(0);
    IntVector::write(body, isa, IntVector::width_for(rows));
  }
  std::vector<uint32_t>().swap(isa);
  section_begin.push_back(body.size());
  EliasFano::write(body, std::vector<uint64_t>(doc_starts.begin(), doc_starts.end()), n);
  section_begin.push_back(body.size());
  IntVector::write(body, doc_end_rows, IntVector::width_for(rows));
  section_begin.push_back(body.size());

  report("write", 0, body.size());
  ShardInfo info;
  info.text_bytes = n;
  info.n_docs = n_docs;
  info.sa_sample = sa_sample;
  info.isa_sample = isa_sample;
  write_shard_file(path, info, body.bytes(), section_begin);
  report("write", body.size(), body.size());
}

}  // namespace rtv

// The on-disk shard: a fixed header (magic, version, sizes, sample rates, section table,
// checksums) followed by a body of 8-byte-aligned sections. See docs/formats.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mapped_file.hpp"
#include "serial.hpp"

namespace rtv {

constexpr uint32_t kFormatVersion = 1;
// Entries of the pair table at the end of the counts section (first bytes 0x00-0xFE, all second
// bytes). Shards written before it have none; readers of format 1 ignore what follows C.
constexpr uint64_t kPairRows = 255 * 256;

enum Section : unsigned {
  kSectionCounts,      // primary row, C array, pair table (absent in older shards; build.hpp pair_rows)
  kSectionBwt,         // wavelet tree over the BWT
  kSectionSaMarks,     // Elias-Fano set of rows whose text position is a multiple of sa_sample
  kSectionSaValues,    // position / sa_sample for each marked row, in row order
  kSectionIsa,         // kind, then rows (0) or shortcuts inverting sa_values (2)
  kSectionDocStarts,   // Elias-Fano set of document start positions
  kSectionDocEndRows,  // row of each document's separator (walk LF from it to extract)
  kNumSections
};

struct ShardInfo {
  uint32_t version = kFormatVersion;
  uint64_t text_bytes = 0;
  uint64_t n_docs = 0;
  uint32_t sa_sample = 0;
  uint32_t isa_sample = 0;
  uint64_t body_checksum = 0;
};

// Writes header + body to path. section_begin has kNumSections + 1 offsets into body.
void write_shard_file(const std::string& path, const ShardInfo& info, const std::vector<uint8_t>& body,
                      const std::vector<uint64_t>& section_begin);

// A mapped shard whose header, size and (optionally) body checksum have been validated.
class ShardFile {
 public:
  ShardFile(const std::string& path, bool verify);
  const ShardInfo& info() const { return info_; }
  Reader section(Section s) const;
  uint64_t file_bytes() const { return file_.size(); }

 private:
  MappedFile file_;
  ShardInfo info_;
  uint64_t body_offset_ = 0;
  uint64_t section_begin_[kNumSections + 1] = {};
};

}  // namespace rtv

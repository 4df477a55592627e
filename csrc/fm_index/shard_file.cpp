#include "shard_file.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>

#include "checksum.hpp"

namespace rtv {
namespace {

constexpr char kMagic[8] = {'R', 'T', 'V', 'F', 'M', 'I', 'D', 'X'};

// Little-endian on disk (as on every platform we build for); fields are naturally aligned.
struct RawHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint64_t text_bytes;
  uint64_t n_docs;
  uint32_t sa_sample;
  uint32_t isa_sample;
  uint64_t body_bytes;
  uint64_t body_checksum;
  uint64_t section_begin[kNumSections + 1];  // relative to the body
  uint64_t header_checksum;                  // of every byte above
};
static_assert(sizeof(RawHeader) % 8 == 0, "header must keep the body 8-byte aligned");

// Where the version field sits, so a newer file is recognised before its layout is trusted.
constexpr size_t kVersionEnd = offsetof(RawHeader, version) + sizeof(uint32_t);

const char* const kSectionNames[kNumSections] = {"counts",   "bwt",        "sa_marks", "sa_values",
                                                 "isa",      "doc_starts", "doc_end_rows"};

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace

void write_shard_file(const std::string& path, const ShardInfo& info, const std::vector<uint8_t>& body,
                      const std::vector<uint64_t>& section_begin) {
  RawHeader h;
  std::memset(&h, 0, sizeof h);
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = info.version;
  h.header_bytes = sizeof(RawHeader);
  h.text_bytes = info.text_bytes;
  h.n_docs = info.n_docs;
  h.sa_sample = info.sa_sample;
  h.isa_sample = info.isa_sample;
  h.body_bytes = body.size();
  h.body_checksum = checksum64(body.data(), body.size());
  for (unsigned s = 0; s <= kNumSections; ++s) h.section_begin[s] = section_begin.at(s);
  h.header_checksum = checksum64(&h, offsetof(RawHeader, header_checksum));

  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "wb"));
  if (!f) throw IoError(errno, path, "cannot create");
  if (std::fwrite(&h, sizeof h, 1, f.get()) != 1 ||
      (!body.empty() && std::fwrite(body.data(), body.size(), 1, f.get()) != 1))
    throw IoError(errno, path, "cannot write");
  if (std::fclose(f.release()) != 0) throw IoError(errno, path, "cannot finish writing");
}

ShardFile::ShardFile(const std::string& path, bool verify) : file_(path) {
  const uint8_t* data = file_.data();
  const uint64_t size = file_.size();
  if (size < sizeof kMagic || std::memcmp(data, kMagic, sizeof kMagic) != 0)
    throw FormatError(path + " is not an rtv FM-index shard (bad magic bytes)");
  if (size < kVersionEnd) throw FormatError(path + " is truncated (incomplete header)");
  uint32_t version;
  std::memcpy(&version, data + offsetof(RawHeader, version), sizeof version);
  if (version > kFormatVersion)
    throw FormatError(path + " was written by a newer rtv (shard format version " + std::to_string(version) +
                      ", this build reads up to " + std::to_string(kFormatVersion) + "); upgrade rtv");
  if (version == 0) throw FormatError(path + " has an invalid format version 0");
  if (size < sizeof(RawHeader)) throw FormatError(path + " is truncated (incomplete header)");
  RawHeader h;
  std::memcpy(&h, data, sizeof h);
  if (h.header_bytes != sizeof(RawHeader) ||
      h.header_checksum != checksum64(&h, offsetof(RawHeader, header_checksum)))
    throw FormatError(path + " has a corrupted header (checksum mismatch); rebuild the index");
  if (size < sizeof(RawHeader) + h.body_bytes)
    throw FormatError(path + " is truncated (" + std::to_string(size) + " bytes, header says " +
                      std::to_string(sizeof(RawHeader) + h.body_bytes) + "); rebuild the index");
  if (size > sizeof(RawHeader) + h.body_bytes)
    throw FormatError(path + " has trailing bytes after the index body; rebuild the index");
  body_offset_ = sizeof(RawHeader);
  if (verify && checksum64(data + body_offset_, h.body_bytes) != h.body_checksum)
    throw FormatError(path + " is corrupted (body checksum mismatch); rebuild the index");
  for (unsigned s = 0; s <= kNumSections; ++s) {
    section_begin_[s] = h.section_begin[s];
    if ((s > 0 && section_begin_[s] < section_begin_[s - 1]) || section_begin_[s] > h.body_bytes ||
        section_begin_[s] % 8 != 0)
      throw FormatError(path + " has a corrupted section table");
  }
  if (h.sa_sample == 0 || h.isa_sample == 0 || h.n_docs == 0 || h.text_bytes == 0 || h.n_docs > h.text_bytes)
    throw FormatError(path + " has corrupted header fields");
  info_.version = h.version;
  info_.text_bytes = h.text_bytes;
  info_.n_docs = h.n_docs;
  info_.sa_sample = h.sa_sample;
  info_.isa_sample = h.isa_sample;
  info_.body_checksum = h.body_checksum;
}

Reader ShardFile::section(Section s) const {
  return Reader(file_.data() + body_offset_ + section_begin_[s], section_begin_[s + 1] - section_begin_[s],
                kSectionNames[s]);
}

}  // namespace rtv

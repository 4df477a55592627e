// Flat serialization of index structures: arrays are 8-byte aligned with a u64 length prefix,
// so a reader over a memory-mapped file points straight into the mapping (no copies).
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace rtv {

// A shard file that is truncated, corrupted or from an unknown format version.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Damage found while answering a query (a value that would index outside its array): what a file
// opened without its body checksum can hold. Cold and out of line, so hot loops only test a bound.
[[noreturn, gnu::cold, gnu::noinline]] inline void corrupt(const char* what) {
  throw FormatError(std::string("corrupt shard (") + what + "); rebuild the index");
}

class Writer {
 public:
  void put_u64(uint64_t v) { append(&v, sizeof v); }
  template <class T>
  void put_array(const T* data, uint64_t count) {
    put_u64(count);
    append(data, count * sizeof(T));
    align();
  }
  template <class T>
  void put_vector(const std::vector<T>& v) { put_array(v.data(), v.size()); }
  void align() { buf_.resize((buf_.size() + 7) & ~size_t{7}, 0); }
  size_t size() const { return buf_.size(); }
  const std::vector<uint8_t>& bytes() const { return buf_; }

 private:
  void append(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  std::vector<uint8_t> buf_;
};

// Reads what Writer wrote, checking every length against the bytes that are really there.
class Reader {
 public:
  Reader(const uint8_t* data, uint64_t size, std::string what)
      : p_(data), end_(data + size), what_(std::move(what)) {}
  uint64_t get_u64() {
    need(8);
    uint64_t v;
    std::memcpy(&v, p_, 8);
    p_ += 8;
    return v;
  }
  template <class T>
  const T* get_array(uint64_t& count) {
    count = get_u64();
    if (count > static_cast<uint64_t>(end_ - p_) / sizeof(T)) fail("array runs past its section");
    const T* out = reinterpret_cast<const T*>(p_);
    p_ += (count * sizeof(T) + 7) & ~uint64_t{7};
    if (p_ > end_) p_ = end_;
    return out;
  }
  template <class T>
  const T* get_array_of(uint64_t expected) {
    uint64_t count;
    const T* out = get_array<T>(count);
    if (count != expected) fail("array has an unexpected length");
    return out;
  }
  uint64_t remaining() const { return static_cast<uint64_t>(end_ - p_); }
  [[noreturn]] void fail(const char* why) const {
    throw FormatError("corrupt shard section '" + what_ + "': " + why + "; rebuild the index");
  }

 private:
  void need(uint64_t n) const {
    if (static_cast<uint64_t>(end_ - p_) < n) fail("section is truncated");
  }
  const uint8_t* p_;
  const uint8_t* end_;
  std::string what_;
};

}  // namespace rtv

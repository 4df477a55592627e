// Read-only memory mapping of a whole file, owned by one RAII object.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>

namespace rtv {

// An operating-system error on a named file (the bindings raise it as OSError).
class IoError : public std::system_error {
 public:
  IoError(int err, const std::string& path, const std::string& action)
      : std::system_error(err, std::generic_category(), action + " " + path), path_(path) {}
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace rtv

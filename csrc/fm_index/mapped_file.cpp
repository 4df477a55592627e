#include "mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace rtv {
namespace {

// Closes the descriptor on every exit path; the mapping outlives it.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) throw IoError(errno, path, "cannot open");
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) throw IoError(errno, path, "cannot stat");
  if (!S_ISREG(st.st_mode)) throw IoError(EINVAL, path, "not a regular file:");
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) return;  // mmap rejects length 0; the format check reports the empty file
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd.fd, 0);
  if (p == MAP_FAILED) throw IoError(errno, path, "cannot memory-map");
  data_ = static_cast<const uint8_t*>(p);
  // Queries jump around the BWT: read-ahead would only evict useful pages.
  ::madvise(p, size_, MADV_RANDOM);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace rtv

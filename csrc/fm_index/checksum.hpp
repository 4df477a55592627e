// 64-bit body checksum (the XXH64 algorithm): fast enough (>= several GB/s) to verify a
// shard on every open, strong enough to catch truncation and flipped bytes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace rtv {

uint64_t checksum64(const void* data, size_t len, uint64_t seed = 0);

}  // namespace rtv

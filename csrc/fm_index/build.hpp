// Building a shard file from separator-terminated text.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace rtv {

// Called with a stage name and progress within it, at most ~100 times per stage.
using BuildProgress = std::function<void(const char* stage, uint64_t done, uint64_t total)>;

// text: documents, each followed by a 0xFF byte (the text must end with one); 1 <= n < 2^31.
// Writes one shard file at path. The suffix array comes from our SA-IS (sais.hpp); the BWT is
// built in its memory, whose pages past the BWT go back to the system as the pass consumes them.
// Peak memory is the 32-bit suffix array, 4 bytes per text byte besides the text: its
// construction needs no type bits (sais.cpp) and later stages hold the BWT, samples and output.
// The pair table of the counts section: out[a * 256 + b] (a < 255) is the first row whose suffix
// starts with a followed by a byte >= b, so the rows of the two-byte string ab (b < 255) are
// [out[a * 256 + b], out[a * 256 + b + 1]): exactly what one backward-search step from b gives.
// C: the shard's C array.
std::vector<uint32_t> pair_rows(const uint8_t* text, size_t n, const std::vector<uint64_t>& C);

void build_shard(const uint8_t* text, size_t n, const std::string& path, uint32_t sa_sample = 32,
                 uint32_t isa_sample = 32, const BuildProgress& progress = nullptr);

}  // namespace rtv

// Suffix array construction by induced sorting (SA-IS, Nong, Zhang & Chan 2009).
#pragma once
#include <cstdint>

namespace rtv {

// Fills sa[0..n) with the suffix array of text[0..n). The end of the text acts as a virtual
// sentinel smaller than every byte, so any byte value (0x00 included) may occur.
// Needs n < 2^31; working memory beyond text and sa is one bucket array (256 ints at the top,
// the reduced alphabet in free suffix-array space below it when that fits).
void suffix_array(const uint8_t* text, int32_t n, int32_t* sa);

}  // namespace rtv

// Bit-for-bit equality of floats (signed zeros and NaN payloads included): what the
// determinism and conformance checks compare, where == would let -0 pass for +0.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

namespace kvq::test {

inline bool same_bits(float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b); }

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace kvq::test

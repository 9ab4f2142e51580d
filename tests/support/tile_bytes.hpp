// A codec's encoding of one tile as plain bytes, what the codec tests compare with
// published or hand-computed encodings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvq::test {

template <class Codec>
std::vector<std::uint8_t> encode_bytes(const Codec& codec, const std::vector<float>& x) {
  std::vector<std::byte> out(codec.bytes_per_tile());
  codec.encode_tile(x.data(), out.data());
  std::vector<std::uint8_t> u(out.size());
  for (std::size_t i = 0; i < out.size(); ++i) u[i] = static_cast<std::uint8_t>(out[i]);
  return u;
}

}  // namespace kvq::test

// Little-endian byte access and bit packing shared by the codec formats.
//
// Formats are specified as little-endian byte sequences, independent of the
// host, so every multi-byte field is read and written through these helpers
// (memcpy compiles to a plain load on little-endian targets).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvq::bits {

inline std::uint16_t load_u16(const std::byte* p) noexcept {
  std::uint8_t b[2];
  std::memcpy(b, p, 2);
  return static_cast<std::uint16_t>(b[0] | (b[1] << 8));
}
inline void store_u16(std::byte* p, std::uint16_t v) noexcept {
  const std::uint8_t b[2] = {static_cast<std::uint8_t>(v), static_cast<std::uint8_t>(v >> 8)};
  std::memcpy(p, b, 2);
}
inline std::uint32_t load_u32(const std::byte* p) noexcept {
  std::uint8_t b[4];
  std::memcpy(b, p, 4);
  return std::uint32_t{b[0]} | (std::uint32_t{b[1]} << 8) | (std::uint32_t{b[2]} << 16) |
         (std::uint32_t{b[3]} << 24);
}
inline void store_u32(std::byte* p, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
inline std::uint64_t load_u64(const std::byte* p) noexcept {
  return std::uint64_t{load_u32(p)} | (std::uint64_t{load_u32(p + 4)} << 32);
}
inline void store_u64(std::byte* p, std::uint64_t v) noexcept {
  store_u32(p, static_cast<std::uint32_t>(v));
  store_u32(p + 4, static_cast<std::uint32_t>(v >> 32));
}
inline float load_f32(const std::byte* p) noexcept { return std::bit_cast<float>(load_u32(p)); }
inline void store_f32(std::byte* p, float v) noexcept { store_u32(p, std::bit_cast<std::uint32_t>(v)); }

inline std::uint8_t byte_at(const std::byte* p, std::size_t i) noexcept {
  return static_cast<std::uint8_t>(p[i]);
}

// Packed fields of `width` bits (1..8), least significant bit first: field i
// occupies bits [i*width, (i+1)*width) of the little-endian byte stream.
// Used by formats whose fields do not divide a byte evenly (e.g. 3-bit codes).
inline unsigned get_field(const std::byte* p, std::size_t i, unsigned width) noexcept {
  const std::size_t bit = i * width;
  const std::size_t byte = bit / 8;
  const unsigned shift = static_cast<unsigned>(bit % 8);
  unsigned v = byte_at(p, byte) >> shift;
  if (shift + width > 8) v |= static_cast<unsigned>(byte_at(p, byte + 1)) << (8 - shift);
  return v & ((1u << width) - 1u);
}
inline void set_field(std::byte* p, std::size_t i, unsigned width, unsigned value) noexcept {
  const std::size_t bit = i * width;
  const std::size_t byte = bit / 8;
  const unsigned shift = static_cast<unsigned>(bit % 8);
  const unsigned mask = (1u << width) - 1u;
  value &= mask;
  p[byte] = static_cast<std::byte>((byte_at(p, byte) & ~(mask << shift)) | (value << shift));
  if (shift + width > 8) {
    const unsigned hi_shift = 8 - shift;
    p[byte + 1] = static_cast<std::byte>((byte_at(p, byte + 1) & ~(mask >> hi_shift)) |
                                         (value >> hi_shift));
  }
}
// Bytes needed for n fields of `width` bits.
constexpr std::size_t packed_bytes(std::size_t n, unsigned width) noexcept {
  return (n * width + 7) / 8;
}

}  // namespace kvq::bits

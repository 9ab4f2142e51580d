#include "kvq_test.hpp"

#include <kvq/core/bits.hpp>
#include <kvq/core/rng.hpp>

#include <array>
#include <cstdint>
#include <vector>

TEST_CASE("bits: little-endian fields", "[core][bits]") {
  std::array<std::byte, 8> b{};
  kvq::bits::store_u16(b.data(), 0x1234);
  CHECK(b[0] == std::byte{0x34});
  CHECK(b[1] == std::byte{0x12});
  CHECK(kvq::bits::load_u16(b.data()) == 0x1234);
  kvq::bits::store_u32(b.data(), 0xA1B2C3D4u);
  CHECK(b[0] == std::byte{0xD4});
  CHECK(b[3] == std::byte{0xA1});
  kvq::bits::store_u64(b.data(), 0x0102030405060708ull);
  CHECK(b[0] == std::byte{0x08});
  CHECK(b[7] == std::byte{0x01});
  CHECK(kvq::bits::load_u64(b.data()) == 0x0102030405060708ull);
  kvq::bits::store_f32(b.data(), -1.5f);
  CHECK(kvq::bits::load_f32(b.data()) == -1.5f);
}

TEST_CASE("bits: packed fields of every width round-trip and do not disturb neighbours",
          "[core][bits]") {
  kvq::Rng rng(7);
  for (unsigned width = 1; width <= 8; ++width) {
    const std::size_t n = 77;
    std::vector<std::byte> buf(kvq::bits::packed_bytes(n, width) + 1, std::byte{0xAA});
    std::vector<unsigned> values(n);
    for (auto& v : values) v = static_cast<unsigned>(rng.next_u64() & ((1u << width) - 1));
    for (std::size_t i = 0; i < n; ++i) kvq::bits::set_field(buf.data(), i, width, values[i]);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(kvq::bits::get_field(buf.data(), i, width) == values[i]);
    CHECK(buf.back() == std::byte{0xAA});  // the guard byte past the fields is untouched
  }
  // LSB first: fields 0,1 of width 3 with values 5 and 6 make 0b110'101.
  std::byte two[2]{};
  kvq::bits::set_field(two, 0, 3, 5);
  kvq::bits::set_field(two, 1, 3, 6);
  CHECK(two[0] == std::byte{0b110101});
  CHECK(kvq::bits::packed_bytes(32, 3) == 12);
}

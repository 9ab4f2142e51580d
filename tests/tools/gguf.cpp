// Tests of tools/common/gguf.hpp: a tiny GGUF written here (every metadata type, F32, F16,
// BF16 and Q8_0 tensors, custom alignment) reads back exactly; truncated and hostile
// files are refused with Errc::corrupt_data.
#include "kvq_test.hpp"

#include "gguf.hpp"
#include "support/gguf_writer.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace {

using kvq::tools::GgufFile;
using kvq::tools::GgufType;
using kvq::tools::GgmlType;
using kvq::test::Bytes;
using kvq::test::GgufWriter;

struct TinyFile {
  Bytes bytes;
  std::size_t kv_count_at = 0, tensor_count_at = 0, first_string_len_at = 0, array_len_at = 0,
              first_dim_at = 0, first_offset_at = 0, first_type_at = 0;
};

// general.alignment 64; tensors: f32 [3,2], f16 [4], bf16 [2], q8_0 [32,2].
TinyFile make_tiny() {
  TinyFile t;
  GgufWriter w;
  w.b = {'G', 'G', 'U', 'F'};
  w.u32(3);
  t.tensor_count_at = w.b.size();
  w.u64(4);
  t.kv_count_at = w.b.size();
  w.u64(17);
  t.first_string_len_at = w.b.size();
  w.key("general.architecture", GgufType::string); w.str("llama");
  w.key("general.alignment", GgufType::uint32); w.u32(64);
  w.key("t.u8", GgufType::uint8); w.u8(200);
  w.key("t.i8", GgufType::int8); w.u8(0x80);  // -128
  w.key("t.u16", GgufType::uint16); w.u16(65535);
  w.key("t.i16", GgufType::int16); w.u16(0xFFFE);  // -2
  w.key("t.u32", GgufType::uint32); w.u32(4000000000u);
  w.key("t.i32", GgufType::int32); w.u32(0xFFFFFFFFu);  // -1
  w.key("t.u64", GgufType::uint64); w.u64(0xFFFFFFFFFFFFFFFFull);
  w.key("t.i64", GgufType::int64); w.u64(static_cast<std::uint64_t>(-5000000000ll));
  w.key("t.f32", GgufType::float32); w.f32(0.1f);
  w.key("t.f64", GgufType::float64); w.f64(1e-300);
  w.key("t.bool", GgufType::boolean); w.u8(1);
  w.key("t.empty", GgufType::string); w.str("");
  w.key("t.arr_i32", GgufType::array); w.u32(static_cast<std::uint32_t>(GgufType::int32));
  t.array_len_at = w.b.size();
  w.u64(3); w.u32(7); w.u32(0xFFFFFFF9u); w.u32(0);
  w.key("t.arr_str", GgufType::array); w.u32(static_cast<std::uint32_t>(GgufType::string));
  w.u64(2); w.str("<s>"); w.str("bytes \xE2\x96\x81");
  w.key("t.nested", GgufType::array); w.u32(static_cast<std::uint32_t>(GgufType::array));
  w.u64(2);
  w.u32(static_cast<std::uint32_t>(GgufType::float32)); w.u64(1); w.f32(2.5f);
  w.u32(static_cast<std::uint32_t>(GgufType::uint8)); w.u64(0);

  // Tensor infos. Data: f32 6 x 4 = 24 B at 0; f16 at 64 (8 B); bf16 at 128 (4 B); q8_0 at 192 (68 B).
  w.str("a.f32"); w.u32(2);
  t.first_dim_at = w.b.size();
  w.u64(3); w.u64(2);
  t.first_type_at = w.b.size();
  w.u32(0);
  t.first_offset_at = w.b.size();
  w.u64(0);
  w.str("b.f16"); w.u32(1); w.u64(4); w.u32(1); w.u64(64);
  w.str("c.bf16"); w.u32(1); w.u64(2); w.u32(30); w.u64(128);
  w.str("d.q8_0"); w.u32(2); w.u64(32); w.u64(2); w.u32(8); w.u64(192);
  w.pad(64);
  const std::size_t data = w.b.size();
  for (int i = 0; i < 6; ++i) w.f32(static_cast<float>(i) - 2.5f);
  w.pad(64);
  REQUIRE(w.b.size() - data == 64);
  w.u16(0x3C00); w.u16(0xC000); w.u16(0x0001); w.u16(0x7BFF);  // 1, -2, 2^-24, 65504
  w.pad(64);
  w.u16(0x3F80); w.u16(0xC0A0);  // bf16 1.0, -5.0
  w.pad(64);
  w.u16(0x3800);  // d = 0.5
  for (int j = 0; j < 32; ++j) w.u8(static_cast<unsigned char>(static_cast<std::int8_t>(j - 16)));
  w.u16(0xC000);  // d = -2
  for (int j = 0; j < 32; ++j) w.u8(static_cast<unsigned char>(static_cast<std::int8_t>(j == 0 ? -128 : 127)));
  t.bytes = std::move(w.b);
  return t;
}

void put_u64(Bytes& b, std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<unsigned char>((v >> (8 * i)) & 0xFF);
}

kvq::Errc gguf_error_of(const Bytes& b) {
  try {
    (void)GgufFile::from_bytes(b, "tiny");
  } catch (const kvq::Error& e) {
    return e.code();
  }
  FAIL("GgufFile accepted a bad file");
  return kvq::Errc::invalid_argument;
}

}  // namespace

TEST_CASE("GGUF metadata of every type reads back", "[tools][gguf]") {
  const auto f = GgufFile::from_bytes(make_tiny().bytes, "tiny");
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 64);
  CHECK(f.metadata().size() == 17);
  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_uint("t.u8") == 200);
  CHECK(f.get_int("t.i8") == -128);
  CHECK(f.get_uint("t.u16") == 65535);
  CHECK(f.get_int("t.i16") == -2);
  CHECK(f.get_uint("t.u32") == 4000000000u);
  CHECK(f.get_int("t.i32") == -1);
  CHECK(f.get_uint("t.u64") == 0xFFFFFFFFFFFFFFFFull);
  CHECK(f.get_int("t.i64") == -5000000000ll);
  CHECK(f.get_float("t.f32") == static_cast<double>(0.1f));
  CHECK(f.get_float("t.f64") == 1e-300);
  CHECK(f.get_bool("t.bool"));
  CHECK(f.get_string("t.empty").empty());
  CHECK(f.get("t.i32").type == GgufType::int32);

  const auto& ai = f.get_array("t.arr_i32");
  REQUIRE(ai.size() == 3);
  CHECK(ai.type == GgufType::int32);
  CHECK(std::get<std::int64_t>(ai.at(0).value) == 7);
  CHECK(std::get<std::int64_t>(ai.at(1).value) == -7);
  CHECK(std::get<std::int64_t>(ai.at(2).value) == 0);
  const auto& as = f.get_array("t.arr_str");
  REQUIRE(as.size() == 2);
  CHECK(std::get<std::string>(as.at(1).value) == "bytes \xE2\x96\x81");
  const auto& nested = f.get_array("t.nested");
  REQUIRE(nested.size() == 2);
  const auto first = nested.at(0);  // at() returns a value
  const auto& inner = std::get<kvq::tools::GgufValue::Array>(first.value);
  CHECK(std::get<double>(inner.at(0).value) == 2.5);
  CHECK(std::get<kvq::tools::GgufValue::Array>(nested.at(1).value).size() == 0);

  // Wrong-type and missing lookups are errors, not garbage.
  CHECK_THROWS_AS(f.get_string("t.u8"), kvq::Error);
  CHECK_THROWS_AS(f.get_uint("t.i8"), kvq::Error);
  CHECK_THROWS_AS(f.get_uint("absent"), kvq::Error);
  CHECK(f.get_uint_or("absent", 42) == 42);
  CHECK_THROWS_AS(ai.at(3), kvq::Error);
}

TEST_CASE("GGUF tensors F32, F16, BF16 and Q8_0 convert to float32", "[tools][gguf]") {
  auto f = GgufFile::from_bytes(make_tiny().bytes, "tiny");
  REQUIRE(f.tensors().size() == 4);
  const auto& a = f.tensor("a.f32");
  CHECK(a.ne == std::vector<std::uint64_t>{3, 2});
  CHECK(a.type == GgmlType::f32);
  CHECK(f.tensor_f32("a.f32") == std::vector<float>{-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f});
  CHECK(f.tensor_f32("b.f16") == std::vector<float>{1.0f, -2.0f, 0x1p-24f, 65504.0f});
  CHECK(f.tensor_f32("c.bf16") == std::vector<float>{1.0f, -5.0f});
  const auto q = f.tensor_f32("d.q8_0");
  REQUIRE(q.size() == 64);
  for (int j = 0; j < 32; ++j) CHECK(q[static_cast<std::size_t>(j)] == 0.5f * static_cast<float>(j - 16));
  CHECK(q[32] == 256.0f);
  for (int j = 33; j < 64; ++j) CHECK(q[static_cast<std::size_t>(j)] == -254.0f);
  CHECK(f.tensor("d.q8_0").n_bytes == 68);
  CHECK(f.find_tensor("nope") == nullptr);
  CHECK_THROWS_AS(f.tensor("nope"), kvq::Error);
  f.release_data();
  CHECK_THROWS_AS(f.tensor_f32("a.f32"), kvq::Error);
  CHECK(f.get_uint("general.alignment") == 64);  // metadata survives release_data
}

TEST_CASE("GGUF reader refuses truncated and hostile files", "[tools][gguf]") {
  using kvq::Errc;
  const TinyFile t = make_tiny();
  REQUIRE_NOTHROW(GgufFile::from_bytes(t.bytes));

  // Every truncation is refused (the last tensor ends exactly at the end of the file).
  for (std::size_t n = 0; n < t.bytes.size(); ++n)
    REQUIRE(gguf_error_of(Bytes(t.bytes.begin(), t.bytes.begin() + static_cast<std::ptrdiff_t>(n))) == Errc::corrupt_data);

  auto patched = [&](std::size_t at, std::uint64_t v) {
    Bytes b = t.bytes;
    put_u64(b, at, v);
    return b;
  };
  CHECK(gguf_error_of(patched(t.kv_count_at, 1ull << 62)) == Errc::corrupt_data);
  CHECK(gguf_error_of(patched(t.tensor_count_at, ~0ull)) == Errc::corrupt_data);
  CHECK(gguf_error_of(patched(t.first_string_len_at, ~0ull)) == Errc::corrupt_data);
  CHECK(gguf_error_of(patched(t.first_string_len_at, 1ull << 40)) == Errc::corrupt_data);
  CHECK(gguf_error_of(patched(t.array_len_at, 1ull << 61)) == Errc::corrupt_data);
  CHECK(gguf_error_of(patched(t.first_dim_at, 1ull << 50)) == Errc::corrupt_data);
  CHECK(gguf_error_of(patched(t.first_dim_at, 0)) == Errc::corrupt_data);
  CHECK(gguf_error_of(patched(t.first_dim_at, 3000)) == Errc::corrupt_data);  // extends past the file
  CHECK(gguf_error_of(patched(t.first_offset_at, 32)) == Errc::corrupt_data);  // misaligned for 64
  CHECK(gguf_error_of(patched(t.first_offset_at, 1ull << 63)) == Errc::corrupt_data);
  CHECK(gguf_error_of(patched(t.first_offset_at, ~0ull - 63)) == Errc::corrupt_data);

  Bytes b = t.bytes;
  b[t.first_type_at] = 77;  // unknown ggml type
  CHECK(gguf_error_of(b) == Errc::corrupt_data);
  b = t.bytes;
  b[0] = 'X';
  CHECK(gguf_error_of(b) == Errc::corrupt_data);
  b = t.bytes;
  b[4] = 1;  // GGUF v1 uses 32-bit counts: not supported
  CHECK(gguf_error_of(b) == Errc::corrupt_data);
  b = t.bytes;
  b[t.first_string_len_at + 8 + 20] = 99;  // value type of general.architecture
  CHECK(gguf_error_of(b) == Errc::corrupt_data);
  // Duplicate metadata key: rename the key "t.i8" to "t.u8".
  b = t.bytes;
  const std::string needle = "t.i8";
  auto it = std::search(b.begin(), b.end(), needle.begin(), needle.end());
  REQUIRE(it != b.end());
  *(it + 2) = 'u';
  CHECK(gguf_error_of(b) == Errc::corrupt_data);

  // Byte flips anywhere in the header never crash: either refused or parsed.
  int refused = 0;
  const std::size_t header_end = t.bytes.size() - 64 * 3 - 68;
  for (std::size_t i = 0; i < header_end; ++i) {
    Bytes x = t.bytes;
    x[i] ^= 0xA5;
    try {
      (void)GgufFile::from_bytes(std::move(x));
    } catch (const kvq::Error& e) {
      ++refused;
      CHECK(e.code() == Errc::corrupt_data);
    }
  }
  CHECK(refused > 100);
}

// Tests of tools/common/npy.hpp: float16/float32 round trips through files written here,
// exact half conversion, and refusal of truncated, foreign and hostile headers.
#include "kvq_test.hpp"

#include "npy.hpp"

#include <kvq/core/half.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace {

using kvq::tools::parse_npy;
using Bytes = std::vector<unsigned char>;

// A .npy image with the given version, header dictionary text and payload.
Bytes make_npy(int major, const std::string& dict, const Bytes& payload) {
  Bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(major), 0};
  const std::size_t len = dict.size();
  b.push_back(static_cast<unsigned char>(len & 0xFF));
  b.push_back(static_cast<unsigned char>((len >> 8) & 0xFF));
  if (major >= 2) {
    b.push_back(static_cast<unsigned char>((len >> 16) & 0xFF));
    b.push_back(static_cast<unsigned char>((len >> 24) & 0xFF));
  }
  b.insert(b.end(), dict.begin(), dict.end());
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes halves(const std::vector<std::uint16_t>& h) {
  Bytes b;
  for (auto x : h) {
    b.push_back(static_cast<unsigned char>(x & 0xFF));
    b.push_back(static_cast<unsigned char>(x >> 8));
  }
  return b;
}

kvq::Errc npy_error_of(const Bytes& b) {
  try {
    (void)parse_npy(b, "test");
  } catch (const kvq::Error& e) {
    return e.code();
  }
  FAIL("parse_npy accepted a bad file");
  return kvq::Errc::invalid_argument;
}

}  // namespace

TEST_CASE("npy float16 data converts exactly, special and subnormal values included", "[tools][npy]") {
  // Every half bit pattern through the reader: it converts with the library's
  // kvq::half_bits_to_float (tests/core/half.cpp checks that against F16C).
  std::vector<std::uint16_t> all(65536);
  for (std::uint32_t h = 0; h < all.size(); ++h) all[h] = static_cast<std::uint16_t>(h);
  const auto a = parse_npy(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (65536,), }\n", halves(all)));
  REQUIRE(a.data.size() == all.size());
  auto f = [&](std::uint16_t h) { return a.data[h]; };
  for (std::uint32_t h = 0; h < all.size(); ++h) {
    const float ref = kvq::half_bits_to_float(static_cast<std::uint16_t>(h));
    REQUIRE(std::memcmp(&a.data[h], &ref, sizeof ref) == 0);
  }
  CHECK(f(0x3C00) == 1.0f);
  CHECK(f(0xC000) == -2.0f);
  CHECK(f(0x7BFF) == 65504.0f);
  CHECK(f(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(f(0x03FF) == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(f(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
  CHECK(f(0x3555) == 0x1.554p-2f);
  CHECK(std::signbit(f(0x8000)));
  CHECK(f(0x8000) == 0.0f);
  CHECK(f(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(f(0xFC00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(f(0x7E00)));
  // Every finite half converts to a float that is a multiple of 2^-24 and below 65520.
  for (std::uint32_t h = 0; h < 0x7C00; ++h) {
    const float x = f(static_cast<std::uint16_t>(h));
    REQUIRE(x >= 0.0f);
    REQUIRE(x < 65520.0f);
    const float scaled = x * 16777216.0f;  // 2^24
    REQUIRE(scaled == std::floor(scaled));
    if (h > 0) REQUIRE(x > f(static_cast<std::uint16_t>(h - 1)));  // strictly increasing
  }
}

TEST_CASE("npy float32 files round trip through write_npy/read_npy", "[tools][npy]") {
  const auto path = std::filesystem::temp_directory_path() / "kvq_npy_roundtrip.npy";
  const std::vector<std::size_t> shape = {3, 2, 5};
  std::vector<float> data(30);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = std::sin(static_cast<float>(i)) * 100.0f - 7.5f;
  kvq::tools::write_npy(path, shape, data);
  const auto arr = kvq::tools::read_npy(path);
  CHECK(arr.shape == shape);
  CHECK(arr.data == data);
  // NumPy aligns the whole preamble to 64 bytes.
  CHECK((std::filesystem::file_size(path) - 30 * 4) % 64 == 0);

  const std::vector<std::size_t> one = {4};
  kvq::tools::write_npy(path, one, std::span<const float>(data.data(), 4));
  const auto vec = kvq::tools::read_npy(path);
  CHECK(vec.shape == one);
  CHECK(vec.data[3] == data[3]);
  std::filesystem::remove(path);
}

TEST_CASE("npy float16 in versions 1, 2 and 3", "[tools][npy]") {
  const Bytes payload = halves({0x3C00, 0xC000, 0x3800, 0x0001, 0x7BFF, 0x8000});
  for (int major : {1, 2, 3}) {
    const auto a = parse_npy(make_npy(major, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }\n", payload));
    REQUIRE(a.shape == std::vector<std::size_t>{2, 3});
    CHECK(a.data[0] == 1.0f);
    CHECK(a.data[1] == -2.0f);
    CHECK(a.data[2] == 0.5f);
    CHECK(a.data[3] == std::ldexp(1.0f, -24));
    CHECK(a.data[4] == 65504.0f);
  }
  // Scalars (shape ()) hold one element; double quotes and no spaces are fine too.
  const auto s = parse_npy(make_npy(1, "{\"descr\":\"<f2\",\"shape\":(),\"fortran_order\":False}", halves({0x4000})));
  CHECK(s.shape.empty());
  REQUIRE(s.size() == 1);
  CHECK(s.data[0] == 2.0f);
}

TEST_CASE("npy readers refuse truncated, foreign and hostile files", "[tools][npy]") {
  using kvq::Errc;
  const std::string good = "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }\n";
  const Bytes payload = halves({1, 2, 3, 4, 5, 6});
  const Bytes ok = make_npy(1, good, payload);
  REQUIRE_NOTHROW(parse_npy(ok));

  // Truncated anywhere: preamble, header or data.
  for (std::size_t n : {std::size_t{0}, std::size_t{5}, std::size_t{9}, std::size_t{20}, ok.size() - 1})
    CHECK(npy_error_of(Bytes(ok.begin(), ok.begin() + static_cast<std::ptrdiff_t>(n))) == Errc::corrupt_data);
  // Trailing garbage: data size no longer matches the shape.
  Bytes longer = ok;
  longer.push_back(0);
  CHECK(npy_error_of(longer) == Errc::corrupt_data);
  // Foreign files.
  const std::string png = "\x89PNG\r\n\x1a\n0000000000";
  CHECK(npy_error_of(Bytes(png.begin(), png.end())) == Errc::corrupt_data);
  Bytes v9 = ok;
  v9[6] = 9;
  CHECK(npy_error_of(v9) == Errc::corrupt_data);
  // Header length larger than the file (v1 and v2 with a 4 GiB claim).
  Bytes hl = ok;
  hl[8] = 0xFF;
  hl[9] = 0xFF;
  CHECK(npy_error_of(hl) == Errc::corrupt_data);
  Bytes hl2 = make_npy(2, good, payload);
  hl2[8] = hl2[9] = hl2[10] = hl2[11] = 0xFF;
  CHECK(npy_error_of(hl2) == Errc::corrupt_data);
  // Shapes whose product overflows or exceeds the file: no allocation, a clear error.
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }", payload)) ==
        Errc::corrupt_data);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }", payload)) ==
        Errc::corrupt_data);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (99999999999999999999999,), }", payload)) ==
        Errc::corrupt_data);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }", halves({1, 2, 3}))) ==
        Errc::corrupt_data);
  // Malformed dictionaries.
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False}", payload)) == Errc::corrupt_data);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': Maybe, 'shape': (6,)}", payload)) == Errc::corrupt_data);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (-6,)}", payload)) == Errc::corrupt_data);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (6,), 'x': 1}", payload)) == Errc::corrupt_data);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (6,)", payload)) == Errc::corrupt_data);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (6,)} junk", payload)) == Errc::corrupt_data);
  // Valid .npy that this reader does not serve.
  CHECK(npy_error_of(make_npy(1, "{'descr': '>f2', 'fortran_order': False, 'shape': (6,), }", payload)) == Errc::unsupported);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<i2', 'fortran_order': False, 'shape': (6,), }", payload)) == Errc::unsupported);
  CHECK(npy_error_of(make_npy(1, "{'descr': '<f2', 'fortran_order': True, 'shape': (2, 3), }", payload)) == Errc::unsupported);

  // A missing file is an I/O error.
  try {
    (void)kvq::tools::read_npy("/nonexistent/kvq/none.npy");
    FAIL("read_npy opened a missing file");
  } catch (const kvq::Error& e) {
    CHECK(e.code() == Errc::io_error);
  }
  try {
    (void)kvq::tools::read_npy(std::filesystem::temp_directory_path());  // a directory
    FAIL("read_npy read a directory");
  } catch (const kvq::Error& e) {
    CHECK(e.code() == Errc::io_error);
  }
}

TEST_CASE("npy reader survives every truncation and byte flip of a header", "[tools][npy]") {
  const Bytes ok = make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }\n", halves({1, 2, 3, 4, 5, 6}));
  for (std::size_t n = 0; n < ok.size(); ++n) {
    Bytes cut(ok.begin(), ok.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK_THROWS_AS(parse_npy(cut), kvq::Error);
  }
  // Flipping bytes of the header may keep it valid (e.g. a digit), but must never crash.
  int refused = 0;
  for (std::size_t i = 0; i < ok.size() - 12; ++i)
    for (unsigned char x : {0x01, 0x20, 0x80, 0xFF}) {
      Bytes b = ok;
      b[i] ^= x;
      try {
        const auto a = parse_npy(b);
        CHECK(a.size() * 2 == 12);  // anything accepted still matches the data size
      } catch (const kvq::Error&) {
        ++refused;
      }
    }
  CHECK(refused > 100);
}

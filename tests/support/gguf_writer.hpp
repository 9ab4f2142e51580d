// A little-endian GGUF byte writer for tests that build model files by hand
// (tests/tools/gguf.cpp, tests/tools/gguf_shape.cpp).
#pragma once

#include "gguf.hpp"  // tools/common: GgufType

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace kvq::test {

using Bytes = std::vector<unsigned char>;

struct GgufWriter {
  Bytes b;
  void u8(unsigned v) { b.push_back(static_cast<unsigned char>(v)); }
  void u16(unsigned v) { u8(v & 0xFF); u8((v >> 8) & 0xFF); }
  void u32(std::uint32_t v) { for (int i = 0; i < 4; ++i) u8((v >> (8 * i)) & 0xFF); }
  void u64(std::uint64_t v) { for (int i = 0; i < 8; ++i) u8(static_cast<unsigned>((v >> (8 * i)) & 0xFF)); }
  void f32(float f) { std::uint32_t x; std::memcpy(&x, &f, 4); u32(x); }
  void f64(double d) { std::uint64_t x; std::memcpy(&x, &d, 8); u64(x); }
  void str(const std::string& s) { u64(s.size()); b.insert(b.end(), s.begin(), s.end()); }
  void key(const std::string& k, kvq::tools::GgufType t) { str(k); u32(static_cast<std::uint32_t>(t)); }
  void pad(std::size_t align) { while (b.size() % align) u8(0); }
};

}  // namespace kvq::test

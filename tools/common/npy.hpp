// A small, defensive reader (and float32 writer) for NumPy .npy files.
//
// kvq's evaluation tools read real K/V activations dumped by NumPy (float16 or float32,
// little-endian, C order). This reader accepts format versions 1.0, 2.0 and 3.0 and the
// dtypes '<f2', '<f4' and '<f8', and returns the shape plus the data converted to float32.
// Every length in the header is checked against the file size before anything is
// allocated, so truncated, foreign or hostile files produce Errc::corrupt_data and never a
// crash or an oversized allocation. Valid .npy files this reader does not serve (big-endian,
// Fortran order, integer dtypes) produce Errc::unsupported.
#pragma once

#include <kvq/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace kvq::tools {

namespace detail {

// IEEE 754 binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads).
inline float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits;
  if (exp == 0x1Fu) {  // Inf / NaN
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {  // normal
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  } else if (mant == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal: renormalize
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3FFu;
    bits = sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// bfloat16 -> float32: the upper half of the float's bits.
inline float bf16_to_float(std::uint16_t b) noexcept {
  const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline std::uint16_t load_u16le(const unsigned char* p) noexcept {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t load_u32le(const unsigned char* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint64_t load_u64le(const unsigned char* p) noexcept {
  return static_cast<std::uint64_t>(load_u32le(p)) |
         (static_cast<std::uint64_t>(load_u32le(p + 4)) << 32);
}
inline float load_f32le(const unsigned char* p) noexcept {
  const std::uint32_t bits = load_u32le(p);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline double load_f64le(const unsigned char* p) noexcept {
  const std::uint64_t bits = load_u64le(p);
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

// Whole file into memory; the allocation is bounded by the file's actual size.
inline std::vector<unsigned char> read_file_bytes(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    kvq::detail::fail(Errc::io_error, "'" + path.string() + "' is not a readable regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) kvq::detail::fail(Errc::io_error, "cannot open '" + path.string() + "'");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) kvq::detail::fail(Errc::io_error, "cannot size '" + path.string() + "'");
  in.seekg(0, std::ios::beg);
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    kvq::detail::fail(Errc::io_error, "cannot read '" + path.string() + "'");
  return bytes;
}

// Parser of the header dictionary NumPy writes, e.g.
//   {'descr': '<f2', 'fortran_order': False, 'shape': (8, 2, 4096, 64), }
// Only the literal forms NumPy emits are accepted: quoted strings, True/False, and tuples
// of non-negative integers.
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, std::string_view what) : s_(text), what_(what) {}

  struct Result {
    std::string descr;
    bool fortran_order = false;
    std::vector<std::uint64_t> shape;
  };

  Result parse() {
    Result r;
    bool have_descr = false, have_order = false, have_shape = false;
    ws();
    expect('{');
    ws();
    while (peek() != '}') {
      const std::string key = string_literal();
      ws();
      expect(':');
      ws();
      if (key == "descr") {
        r.descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        r.fortran_order = boolean();
        have_order = true;
      } else if (key == "shape") {
        r.shape = tuple();
        have_shape = true;
      } else {
        bad("unknown header key '" + key + "'");
      }
      ws();
      if (peek() == ',') {
        ++i_;
        ws();
      } else if (peek() != '}') {
        bad("expected ',' or '}'");
      }
    }
    ++i_;
    ws();
    if (i_ != s_.size()) bad("trailing bytes after the header dictionary");
    if (!have_descr || !have_order || !have_shape)
      bad("header lacks one of 'descr', 'fortran_order', 'shape'");
    return r;
  }

 private:
  [[noreturn]] void bad(const std::string& msg) const {
    kvq::detail::fail(Errc::corrupt_data,
                      std::string(what_) + ": malformed .npy header: " + msg);
  }
  char peek() const {
    if (i_ >= s_.size()) bad("unexpected end of header");
    return s_[i_];
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r'))
      ++i_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string_literal() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string");
    ++i_;
    std::string out;
    while (peek() != q) {
      if (out.size() > 64) bad("string too long");
      out.push_back(s_[i_++]);
    }
    ++i_;
    return out;
  }
  bool boolean() {
    if (s_.substr(i_, 4) == "True") {
      i_ += 4;
      return true;
    }
    if (s_.substr(i_, 5) == "False") {
      i_ += 5;
      return false;
    }
    bad("expected True or False");
  }
  std::vector<std::uint64_t> tuple() {
    std::vector<std::uint64_t> dims;
    expect('(');
    ws();
    while (peek() != ')') {
      if (dims.size() >= 32) bad("too many dimensions");
      if (peek() < '0' || peek() > '9') bad("expected a dimension");
      std::uint64_t v = 0;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        const unsigned d = static_cast<unsigned>(s_[i_++] - '0');
        if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) bad("dimension overflows");
        v = v * 10 + d;
      }
      if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2 long suffix
      dims.push_back(v);
      ws();
      if (peek() == ',') {
        ++i_;
        ws();
      } else if (peek() != ')') {
        bad("expected ',' or ')' in shape");
      }
    }
    ++i_;
    return dims;
  }

  std::string_view s_;
  std::string_view what_;
  std::size_t i_ = 0;
};

}  // namespace detail

// A dense float32 array in C (row-major) order.
struct NpyArray {
  std::vector<std::size_t> shape;
  std::vector<float> data;

  std::size_t size() const noexcept { return data.size(); }
  std::size_t ndim() const noexcept { return shape.size(); }
};

// Parses an in-memory .npy image. `what` names the source in error messages.
inline NpyArray parse_npy(std::span<const unsigned char> bytes, std::string_view what = "npy") {
  using kvq::detail::fail;
  const std::string name(what);
  static constexpr unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (bytes.size() < 10 || std::memcmp(bytes.data(), magic, 6) != 0)
    fail(Errc::corrupt_data, name + ": not a .npy file (bad magic)");
  const unsigned major = bytes[6], minor = bytes[7];
  std::size_t header_len = 0, preamble = 0;
  if (major == 1) {
    header_len = detail::load_u16le(bytes.data() + 8);
    preamble = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail(Errc::corrupt_data, name + ": truncated .npy preamble");
    header_len = detail::load_u32le(bytes.data() + 8);
    preamble = 12;
  } else {
    fail(Errc::corrupt_data, name + ": unknown .npy format version " + std::to_string(major) +
                                 "." + std::to_string(minor));
  }
  if (header_len > bytes.size() - preamble)
    fail(Errc::corrupt_data, name + ": .npy header length " + std::to_string(header_len) +
                                 " exceeds the file size " + std::to_string(bytes.size()));
  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + preamble), header_len);
  const auto hdr = detail::NpyHeaderParser(text, what).parse();

  std::size_t itemsize = 0;
  if (hdr.descr == "<f2") itemsize = 2;
  else if (hdr.descr == "<f4") itemsize = 4;
  else if (hdr.descr == "<f8") itemsize = 8;
  else fail(Errc::unsupported, name + ": dtype '" + hdr.descr + "' is not supported (want <f2, <f4, <f8)");
  if (hdr.fortran_order) fail(Errc::unsupported, name + ": Fortran-order arrays are not supported");

  const std::size_t offset = preamble + header_len;
  const std::uint64_t avail = bytes.size() - offset;
  std::uint64_t count = 1;
  for (std::uint64_t d : hdr.shape) {
    if (d != 0 && count > avail / d)  // count * d * itemsize could not fit in the file
      fail(Errc::corrupt_data, name + ": shape is larger than the file");
    count *= d;
  }
  if (count > avail / itemsize || count * itemsize != avail)
    fail(Errc::corrupt_data, name + ": data is " + std::to_string(avail) + " bytes, shape needs " +
                                 std::to_string(count) + " x " + std::to_string(itemsize));

  NpyArray out;
  out.shape.assign(hdr.shape.begin(), hdr.shape.end());
  out.data.resize(static_cast<std::size_t>(count));
  const unsigned char* p = bytes.data() + offset;
  for (std::size_t i = 0; i < out.data.size(); ++i) {
    switch (itemsize) {
      case 2: out.data[i] = detail::half_to_float(detail::load_u16le(p + 2 * i)); break;
      case 4: out.data[i] = detail::load_f32le(p + 4 * i); break;
      default: out.data[i] = static_cast<float>(detail::load_f64le(p + 8 * i)); break;
    }
  }
  return out;
}

inline NpyArray read_npy(const std::filesystem::path& path) {
  const auto bytes = detail::read_file_bytes(path);
  return parse_npy(bytes, path.string());
}

// Writes a little-endian float32 C-order .npy (format 1.0). For tests and tools.
inline void write_npy(const std::filesystem::path& path, std::span<const std::size_t> shape,
                      std::span<const float> data) {
  std::size_t count = 1;
  for (std::size_t d : shape) count *= d;
  kvq::detail::require(count == data.size(), Errc::shape_mismatch,
                       "write_npy: shape does not match the data size");
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) dict += ",";
    if (i + 1 < shape.size()) dict += " ";
  }
  dict += "), }";
  std::size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  kvq::detail::require(dict.size() <= 0xFFFF, Errc::invalid_argument, "write_npy: header too long");
  std::ofstream out(path, std::ios::binary);
  if (!out) kvq::detail::fail(Errc::io_error, "cannot create '" + path.string() + "'");
  const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                 static_cast<unsigned char>(dict.size() & 0xFF),
                                 static_cast<unsigned char>(dict.size() >> 8)};
  out.write(reinterpret_cast<const char*>(pre), sizeof pre);
  out.write(dict.data(), static_cast<std::streamsize>(dict.size()));
  for (float f : data) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    const unsigned char b[4] = {static_cast<unsigned char>(bits), static_cast<unsigned char>(bits >> 8),
                                static_cast<unsigned char>(bits >> 16),
                                static_cast<unsigned char>(bits >> 24)};
    out.write(reinterpret_cast<const char*>(b), 4);
  }
  if (!out) kvq::detail::fail(Errc::io_error, "cannot write '" + path.string() + "'");
}

}  // namespace kvq::tools

// Minimal reader of the float16 .npy K/V dumps (format 1.0, C order), for tests.
// Reads only the requested [layers, heads, tokens] box so tests stay fast.
// (tools/common/npy.hpp on another branch replaces this at merge.)
#pragma once

#include <kvq/core/half.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvq::test {

struct Fp16Array4 {
  std::size_t dims[4] = {0, 0, 0, 0};  // as stored in the file
  std::size_t layers = 0, heads = 0, tokens = 0, dim = 0;  // as loaded
  std::vector<float> data;  // [layers][heads][tokens][dim]
  float at(std::size_t l, std::size_t h, std::size_t t, std::size_t d) const {
    return data[((l * heads + h) * tokens + t) * dim + d];
  }
};

// Loads [0, n_layers) x all heads x [0, n_tokens) x dim of a 4-D '<f2' array.
inline Fp16Array4 load_npy_fp16(const std::string& path, std::size_t n_layers, std::size_t n_tokens) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0 || magic[6] != 1) throw std::runtime_error(path + ": not npy 1.x");
  unsigned char hl[2];
  in.read(reinterpret_cast<char*>(hl), 2);
  std::string header(hl[0] | (hl[1] << 8), '\0');
  in.read(header.data(), static_cast<std::streamsize>(header.size()));
  if (header.find("'<f2'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": expected little-endian float16, C order");
  Fp16Array4 a;
  std::size_t pos = header.find('(') + 1;
  for (int i = 0; i < 4; ++i) {
    a.dims[i] = std::stoul(header.substr(pos));
    pos = header.find_first_of(",)", pos) + 1;
  }
  const std::streamoff data_start = 10 + static_cast<std::streamoff>(header.size());
  a.layers = std::min(n_layers, a.dims[0]);
  a.heads = a.dims[1];
  a.tokens = std::min(n_tokens, a.dims[2]);
  a.dim = a.dims[3];
  a.data.resize(a.layers * a.heads * a.tokens * a.dim);
  std::vector<std::uint16_t> row(a.tokens * a.dim);
  for (std::size_t l = 0; l < a.layers; ++l)
    for (std::size_t h = 0; h < a.heads; ++h) {
      in.seekg(data_start + static_cast<std::streamoff>(((l * a.dims[1] + h) * a.dims[2]) * a.dims[3] * 2));
      in.read(reinterpret_cast<char*>(row.data()), static_cast<std::streamsize>(row.size() * 2));
      if (!in) throw std::runtime_error(path + ": truncated");
      float* dst = a.data.data() + (l * a.heads + h) * a.tokens * a.dim;
      for (std::size_t i = 0; i < row.size(); ++i) dst[i] = kvq::half_bits_to_float(row[i]);
    }
  return a;
}

}  // namespace kvq::test

// kvq encode / kvq decode: raw little-endian float32 rows <-> encoded tiles.
//
// encode reads rows of --dim floats from stdin and writes tiles; a tile codec
// (tokens_per_tile G > 1) needs a whole number of tiles: a trailing partial tile
// is refused, never padded silently. decode reverses it and refuses input that
// is not a whole number of tiles or that decodes to non-finite values.
#include "cli.hpp"
#include "io.hpp"

#include <kvq/codec/registry.hpp>
#include <kvq/core/bits.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

kvq::AnyCodec codec_from(const kvq::cli::Args& args) {
  const long long dim = args.require_int("dim");
  kvq::detail::require(dim > 0 && dim <= (1 << 16), kvq::Errc::invalid_argument,
                       "--dim must be in 1..65536, got " + std::to_string(dim));
  return kvq::make_codec(args.require("codec"), static_cast<std::size_t>(dim));
}

int encode(const kvq::cli::Args& args) {
  const kvq::AnyCodec codec = codec_from(args);
  const std::vector<std::byte> in = kvq::cli::read_all(stdin);
  const std::size_t tile_floats = codec.tokens_per_tile() * codec.head_dim();
  const std::size_t tile_in = tile_floats * sizeof(float);
  kvq::detail::require(in.size() % (codec.head_dim() * sizeof(float)) == 0, kvq::Errc::shape_mismatch,
                       "input is " + std::to_string(in.size()) + " bytes, not a whole number of rows of " +
                           std::to_string(codec.head_dim()) + " float32");
  kvq::detail::require(in.size() % tile_in == 0, kvq::Errc::shape_mismatch,
                       std::string(codec.name()) + " encodes tiles of " +
                           std::to_string(codec.tokens_per_tile()) + " rows; input has " +
                           std::to_string(in.size() / (codec.head_dim() * sizeof(float))) + " rows");
  const std::size_t tiles = in.size() / tile_in;
  std::vector<float> x(tile_floats);
  std::vector<std::byte> out(tiles * codec.bytes_per_tile());
  for (std::size_t t = 0; t < tiles; ++t) {
    for (std::size_t i = 0; i < tile_floats; ++i) x[i] = kvq::bits::load_f32(in.data() + t * tile_in + 4 * i);
    try {
      codec.encode_tile(x.data(), out.data() + t * codec.bytes_per_tile());
    } catch (const kvq::Error& e) {
      throw kvq::Error(e.code(), "tile " + std::to_string(t) + ": " + e.what());
    }
  }
  kvq::cli::write_all(stdout, out.data(), out.size());
  return 0;
}

int decode(const kvq::cli::Args& args) {
  const kvq::AnyCodec codec = codec_from(args);
  const std::vector<std::byte> in = kvq::cli::read_all(stdin);
  const std::size_t tile_bytes = codec.bytes_per_tile();
  kvq::detail::require(in.size() % tile_bytes == 0, kvq::Errc::shape_mismatch,
                       "input is " + std::to_string(in.size()) + " bytes, not a whole number of " +
                           std::string(codec.name()) + " tiles of " + std::to_string(tile_bytes) + " bytes");
  const std::size_t tile_floats = codec.tokens_per_tile() * codec.head_dim();
  std::vector<float> y(tile_floats);
  std::vector<std::byte> out(in.size() / tile_bytes * tile_floats * sizeof(float));
  for (std::size_t t = 0; t < in.size() / tile_bytes; ++t) {
    codec.decode_tile(in.data() + t * tile_bytes, y.data());
    for (std::size_t i = 0; i < tile_floats; ++i) {
      kvq::detail::require(std::isfinite(y[i]), kvq::Errc::corrupt_data,
                           "tile " + std::to_string(t) + " decodes to a non-finite value (corrupt input?)");
      kvq::bits::store_f32(out.data() + (t * tile_floats + i) * sizeof(float), y[i]);
    }
  }
  kvq::cli::write_all(stdout, out.data(), out.size());
  return 0;
}

const kvq::cli::Command reg_encode{"encode", "--codec NAME --dim D: float32 rows on stdin -> encoded bytes on stdout", encode};
const kvq::cli::Command reg_decode{"decode", "--codec NAME --dim D: encoded bytes on stdin -> float32 rows on stdout", decode};
}  // namespace

// Fuzz target: codec construction from arbitrary names and dimensions --
// make_codec(name, head_dim) including the per-channel "NAME/gN" tile-length
// syntax -- the parameters a command line or config file hands the library.
//
// Input: [head_dim: 4 bytes LE][name bytes...]. Oracle: make_codec returns or
// throws kvq::Error with invalid_argument (unknown name, bad /gN) or
// shape_mismatch (head_dim the codec cannot encode). A codec it returns has the
// requested head_dim, the registry name before any '/', a tile of
// 1..1024 tokens, bytes_per_tile() > 0 and bits/value in (0, 64]; a small one
// encodes an all-zero tile that decodes back to zeros.
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using kvq::fuzz::check;
  kvq::fuzz::Input in(data, size);
  const std::uint32_t dim = static_cast<std::uint32_t>(in.u16()) | (static_cast<std::uint32_t>(in.u16()) << 16);
  const std::string name(reinterpret_cast<const char*>(in.rest()), std::min<std::size_t>(in.remaining(), 64));
  std::optional<kvq::AnyCodec> codec;
  try {
    codec.emplace(kvq::make_codec(name, dim));
  } catch (const kvq::Error& e) {
    check(e.code() == kvq::Errc::invalid_argument || e.code() == kvq::Errc::shape_mismatch,
          "make_codec('" + name + "') failed with " + std::string(kvq::to_string(e.code())));
    return 0;
  }
  const std::string what = "make_codec('" + name + "', " + std::to_string(dim) + "): ";
  check(codec->head_dim() == dim, what + "wrong head_dim");
  check(name.substr(0, name.find('/')) == codec->name(), what + "returned codec " + std::string(codec->name()));
  check(codec->tokens_per_tile() >= 1 && codec->tokens_per_tile() <= 1024, what + "tile length out of range");
  check(codec->bytes_per_tile() > 0, what + "empty tile");
  check(codec->bits_per_value() > 0 && codec->bits_per_value() <= 64, what + "implausible bits/value");
  const std::size_t n = codec->tokens_per_tile() * codec->head_dim();
  if (n <= (1u << 16)) {
    const std::vector<float> zero(n, 0.0f);
    std::vector<std::byte> tile(codec->bytes_per_tile());
    std::vector<float> y(n, 1.0f);
    codec->encode_tile(zero.data(), tile.data());
    codec->decode_tile(tile.data(), y.data());
    check(y == zero, what + "an all-zero tile does not decode to zeros");
  }
  return 0;
}

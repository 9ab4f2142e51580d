// Fuzz target: decode, scores and accumulate of arbitrary tile bytes, for every
// codec in codec_table() (and the per-channel codecs at G = 32/64).
//
// Input: [codec byte][head_dim byte][query/weight seed byte][tile bytes...];
// the tile is the remaining bytes, cycled to fill bytes_per_tile(). Oracle
// (docs/RELIABILITY.md): no crash and no sanitizer report for any bytes; the
// decoded values, scores and accumulation are finite whenever the tile's fp16
// metadata is finite (queries and weights here are finite and bounded); and
// decode_tile is deterministic.
#include "fuzz_support.hpp"

#include <algorithm>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kvq::fuzz;
  Input in(data, size);
  const auto codec = pick_codec(in);
  if (!codec) return 0;
  const std::uint8_t seed = in.u8();
  const std::size_t tile_bytes = codec->bytes_per_tile(), dim = codec->head_dim(),
                    tokens = codec->tokens_per_tile(), n = tokens * dim;

  std::vector<std::byte> tile(tile_bytes, std::byte{0});
  if (in.remaining() > 0)
    for (std::size_t i = 0; i < tile_bytes; ++i) tile[i] = static_cast<std::byte>(in.rest()[i % in.remaining()]);

  std::vector<float> y(n), y2(n), q(dim), qw(dim), s(tokens), w(tokens), acc(dim, 0.0f), out(dim);
  for (std::size_t i = 0; i < dim; ++i) q[i] = static_cast<float>(static_cast<int>((i * 37 + seed) % 17) - 8) / 8.0f;
  for (std::size_t t = 0; t < tokens; ++t) w[t] = static_cast<float>((t * 11 + seed) % 13) / 13.0f;

  codec->decode_tile(tile.data(), y.data());
  codec->decode_tile(tile.data(), y2.data());
  check(std::equal(y.begin(), y.end(), y2.begin(), [](float a, float b) {
          return std::memcmp(&a, &b, sizeof a) == 0;
        }),
        "decode_tile is not deterministic");
  codec->prepare_query(q.data(), qw.data());
  codec->scores(qw.data(), tile.data(), s.data());
  codec->accumulate(acc.data(), w.data(), tile.data());
  codec->finish_output(acc.data(), out.data());

  if (const auto meta_ok = metadata_finite(*codec, tile.data()); meta_ok && *meta_ok) {
    const std::string what = std::string(codec->name()) + " d=" + std::to_string(dim) + ": ";
    check(all_finite(y), what + "finite metadata decoded to a non-finite value");
    check(all_finite(s), what + "finite metadata gave a non-finite score");
    check(all_finite(out), what + "finite metadata gave a non-finite accumulation");
  }
  return 0;
}

#include "kvq_test.hpp"

#include <kvq/cache/attention.hpp>
#include <kvq/core/rng.hpp>

#include <cmath>
#include <vector>

TEST_CASE("attention: segment loops equal per-tile codec calls for a query group", "[cache][attention]") {
  kvq::Rng rng(3);
  const std::size_t d = 64, n_tiles = 7, n_q = 3;
  const kvq::AnyCodec codec = kvq::make_codec("q4_1", d);
  std::vector<float> x(n_tiles * d), q(n_q * d), w(n_q * n_tiles);
  for (auto& v : x) v = static_cast<float>(rng.normal());
  for (auto& v : q) v = static_cast<float>(rng.normal());
  for (auto& v : w) v = static_cast<float>(rng.uniform());
  std::vector<std::byte> tiles(n_tiles * codec.bytes_per_tile());
  for (std::size_t t = 0; t < n_tiles; ++t) codec.encode_tile(x.data() + t * d, tiles.data() + t * codec.bytes_per_tile());

  const std::size_t stride = 10;  // scores land at an offset inside a wider row
  std::vector<float> s(n_q * stride, -1.0f), out(n_q * d, 1.0f);
  kvq::detail::segment_scores(codec, q.data(), n_q, d, tiles.data(), n_tiles, s.data() + 2, stride);
  kvq::detail::segment_accumulate(codec, w.data(), n_q, n_tiles, tiles.data(), n_tiles, out.data(), d);
  std::vector<float> y(d);
  for (std::size_t i = 0; i < n_q; ++i) {
    CHECK(s[i * stride] == -1.0f);
    CHECK(s[i * stride + 9] == -1.0f);
    std::vector<double> o(d, 1.0);  // accumulate adds to what was there
    for (std::size_t t = 0; t < n_tiles; ++t) {
      codec.decode_tile(tiles.data() + t * codec.bytes_per_tile(), y.data());
      double dot = 0;
      for (std::size_t j = 0; j < d; ++j) dot += q[i * d + j] * y[j], o[j] += w[i * n_tiles + t] * y[j];
      CHECK(s[i * stride + 2 + t] == Approx(dot).epsilon(1e-4).margin(1e-4));
    }
    for (std::size_t j = 0; j < d; ++j) CHECK(out[i * d + j] == Approx(o[j]).epsilon(1e-4).margin(1e-4));
  }
}

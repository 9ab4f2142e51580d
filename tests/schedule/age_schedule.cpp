#include "kvq_test.hpp"
#include "support/segments.hpp"
#include "support/cache_fixtures.hpp"
#include "support/tile_codec.hpp"

#include <kvq/cache/cache.hpp>

using kvq::ModelShape;
using kvq::StreamKind;

namespace {
using P4 = kvq::Policy<kvq::Q4_1, kvq::Q4_1>;
using P2 = kvq::Policy<kvq::Q2_1, kvq::Q2_1>;

std::vector<std::size_t> token_counts(const kvq::Cache& c, std::size_t layer, StreamKind kind) {
  std::vector<std::size_t> n;
  for (const auto& s : kvq::test::segments_of(c, layer, kind, 0)) n.push_back(s.n_tokens);
  return n;
}

template <class C>
void feed(C& c, std::size_t n) {
  kvq::Rng rng(1);
  const auto k = kvq::test::random_tokens(rng, n, 1, 32), v = kvq::test::random_tokens(rng, n, 1, 32);
  c.append(0, n, k.data(), v.data());
}
}  // namespace

TEST_CASE("age_schedule: NoWindow compresses every token at once", "[schedule][age_schedule]") {
  kvq::KVCache<P4> c(ModelShape::dense(1, 1, 1, 32, 100));
  feed(c, 10);
  CHECK(token_counts(c, 0, StreamKind::key) == std::vector<std::size_t>{0, 10, 0});
}

TEST_CASE("age_schedule: RecentWindow keeps sinks and the newest tokens exact", "[schedule][age_schedule]") {
  kvq::KVCache<P4, kvq::UniformLayers, kvq::RecentWindow> c(ModelShape::dense(1, 1, 1, 32, 100), {}, {16, 4});
  CHECK(c.spec().to_string() == "k=q4_1,v=q4_1,window=16,sinks=4");
  feed(c, 3);
  CHECK(token_counts(c, 0, StreamKind::key) == std::vector<std::size_t>{3, 0, 0});
  feed(c, 50);
  CHECK(token_counts(c, 0, StreamKind::value) == std::vector<std::size_t>{4, 33, 16});
  CHECK(kvq::test::segments_of(c, 0, StreamKind::key, 0).back().codec->name() == "f32");
  kvq::KVCache<P4, kvq::UniformLayers, kvq::RecentWindow> h(ModelShape::dense(1, 1, 1, 32, 100), {},
                                                           {8, 0, kvq::WindowPrecision::f16});
  feed(h, 20);
  CHECK(kvq::test::segments_of(h, 0, StreamKind::key, 0).back().codec->name() == "f16");
  CHECK(h.memory(0).exact_bytes == 2 * 8 * 32 * 2);  // K and V, 8 tokens, fp16
}

TEST_CASE("age_schedule: Tiered demotes old tokens to the lower policy", "[schedule][age_schedule]") {
  kvq::KVCache<P4, kvq::UniformLayers, kvq::Tiered<P2>> c(ModelShape::dense(1, 1, 1, 32, 500), {}, {8, 24, 2});
  CHECK(c.spec().to_string() == "k=q4_1,v=q4_1,window=8,sinks=2,tier=32:q2_1/q2_1");
  feed(c, 100);
  // sinks 2 | q2_1: tokens with >= 32 newer ones (positions 2..67) | q4_1 | window 8
  CHECK(token_counts(c, 0, StreamKind::key) == std::vector<std::size_t>{2, 66, 24, 8});
  const auto segs = kvq::test::segments_of(c, 0, StreamKind::key, 0);
  CHECK(segs[1].codec->name() == "q2_1");
  CHECK(segs[2].codec->name() == "q4_1");

  // A tile codec in the policy tier: the window holds W..W+G-1 tokens and
  // demotion to a row codec moves whole tiles.
  using Tile = kvq::Policy<kvq::test::ChannelTile<8>, kvq::Q4_1>;
  kvq::KVCache<Tile, kvq::UniformLayers, kvq::Tiered<P2>> t(ModelShape::dense(1, 1, 1, 32, 500), {}, {8, 24, 0});
  for (std::size_t n = 1; n <= 120; ++n) {
    feed(t, 1);
    const auto k = token_counts(t, 0, StreamKind::key);
    if (n >= 8) CHECK((k[3] >= 8 && k[3] <= 15));
    CHECK(k[2] % 8 == 0);
    CHECK(k[1] % 8 == 0);
    CHECK(k[0] + k[1] + k[2] + k[3] == n);
  }
}

TEST_CASE("age_schedule: AttentionAware adds heavy hitters to any age schedule", "[schedule][age_schedule][heavy]") {
  using Age = kvq::AttentionAware<kvq::Tiered<P2>>;
  kvq::KVCache<P4, kvq::UniformLayers, Age> c(ModelShape::dense(1, 1, 1, 32, 500), {}, Age{{8, 24, 2}, 5});
  CHECK(c.spec().to_string() == "k=q4_1,v=q4_1,window=8,sinks=2,heavy=5,tier=32:q2_1/q2_1");
  feed(c, 100);
  // No attend yet: the newest 5 tokens out of the window (87..91) wait to be judged, exact.
  CHECK(c.memory(0).heavy_bytes == 2 * 5 * 32 * 4);
  CHECK(c.heavy_positions(0, 0).empty());
  std::vector<float> q(32, 0.1f), out(32);
  c.attend(0, q.data(), out.data());  // sees them from 8+ positions away: all admitted
  CHECK(c.heavy_positions(0, 0) == std::vector<std::size_t>{87, 88, 89, 90, 91});
  CHECK(c.memory(0).heavy_bytes == 2 * 5 * 32 * 4);
}

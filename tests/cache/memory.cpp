#include "kvq_test.hpp"

#include <kvq/cache/memory.hpp>

using kvq::CacheSpec;
using kvq::ModelShape;

TEST_CASE("memory: plan_memory matches closed forms", "[cache][memory]") {
  const auto shape = ModelShape::dense(4, 8, 2, 64, 1 << 20);
  const std::size_t d = 64, heads = 2;
  // q8_0 (68 B per 64 values) everywhere, 128 exact f32 tokens, 8-token rollback reserve.
  const auto p = kvq::plan_memory(shape, CacheSpec::parse("k=q8_0,v=q8_0,window=128,sinks=4,rollback=8"), 10000);
  const std::size_t compressed = 10000 - 128 - 4;
  CHECK(p.layers.size() == 4);
  CHECK(p.layers[0].compressed_bytes == 2 * heads * compressed * 68);
  CHECK(p.layers[0].exact_bytes == 2 * heads * (128 + 4) * d * 4);
  // Every append past the window moves one f32 token out of it: the undo log
  // holds the last 8 of them per stream.
  CHECK(p.layers[0].reserve_bytes == 2 * heads * 8 * d * 4);
  CHECK(p.total.total_bytes() == 4 * p.layers[0].total_bytes());
  CHECK(p.total.payload_bits_per_value() == Approx(8.5));
  CHECK(p.total.values == 4 * 10000 * heads * d * 2);

  // Boundary layers by KV ordinal cost their own codec's bytes.
  const auto b = kvq::plan_memory(shape, CacheSpec::parse("k=q8_0,v=q2_1,boundary=1+1:q8_0/q8_0"), 1000);
  CHECK(b.layers[0].total_bytes() == b.layers[3].total_bytes());
  CHECK(b.layers[1].total_bytes() == b.layers[2].total_bytes());
  CHECK(b.layers[0].bits_per_value() == Approx(8.5));
  CHECK(b.layers[1].bits_per_value() == Approx((8.5 + 3.0) / 2));

  // Tiers: tokens with >= 512 newer ones are 2-bit.
  const auto t = kvq::plan_memory(shape, CacheSpec::parse("k=q4_1,v=q4_1,tier=512:q2_1/q2_1"), 2000);
  const std::size_t old = 2000 - 512;
  CHECK(t.layers[0].compressed_bytes == 2 * heads * (old * 24 + 512 * 40));

  // Unknown codecs and inconsistent specs are refused.
  CHECK_THROWS_AS(kvq::plan_memory(shape, CacheSpec::parse("k=nope"), 10), kvq::Error);
  CHECK_THROWS_AS(kvq::plan_memory(shape, CacheSpec::parse("boundary=3+3:q8_0/q8_0"), 10), kvq::Error);
  CHECK(kvq::plan_memory(shape, CacheSpec{}, 0).total.total_bytes() == 0);
}

TEST_CASE("memory: plan_stream prices one stream, and the streams sum to plan_memory", "[cache][memory]") {
  const auto shape = ModelShape::dense(3, 4, 2, 64, 1 << 16);
  const std::size_t d = 64, heads = 2;
  const auto spec = CacheSpec::parse("k=q8_0,v=q8_0,layers=pc4/q4_0;turbo2/f32;q2_1/turbo3,window=64,sinks=4,rollback=8");
  for (std::size_t n : {0u, 1u, 100u, 5000u}) {
    const auto p = kvq::plan_memory(shape, spec, n);
    kvq::MemoryUse sum;
    for (std::size_t o = 0; o < 3; ++o) {
      const auto k = kvq::plan_stream(shape, spec, o, kvq::StreamKind::key, n);
      const auto v = kvq::plan_stream(shape, spec, o, kvq::StreamKind::value, n);
      CHECK(k.tokens == 0);
      CHECK(k.values == heads * n * d);
      CHECK(k.total_bytes() + v.total_bytes() == p.layers[o].total_bytes());
      sum += k;
      sum += v;
    }
    CHECK(sum.total_bytes() == p.total.total_bytes());
    CHECK(sum.values == p.total.values);
  }
  // Closed form: q4_0 V of layer 0 (18 B per 32 values), 68 tokens exact, the undo log of 8.
  const auto v0 = kvq::plan_stream(shape, spec, 0, kvq::StreamKind::value, 1000);
  CHECK(v0.compressed_bytes == heads * (1000 - 64 - 4) * 2 * 18);
  CHECK(v0.exact_bytes == heads * (64 + 4) * d * 4);
  CHECK_THROWS_AS(kvq::plan_stream(shape, CacheSpec::parse("k=nope,v=q8_0"), 0, kvq::StreamKind::key, 10), kvq::Error);
}

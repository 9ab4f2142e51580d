#include "kvq_test.hpp"
#include "support/segments.hpp"

#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/memory.hpp>
#include <kvq/cache/snapshot.hpp>

#include <cmath>
#include <string>
#include <vector>

using kvq::CacheSpec;

TEST_CASE("cache_spec: the compact string parses into every field", "[cache][cache_spec]") {
  const auto s = CacheSpec::parse(
      "k=turbo4,v=q4_1,window=128,sinks=4,boundary=2+2:q8_0/q8_0,tier=4096:q2_1/q2_1,tier=8192:q2_1/f16,"
      "precision=f16,rollback=16");
  CHECK(s.codecs == kvq::CodecPair{"turbo4", "q4_1"});
  CHECK(s.window == 128);
  CHECK(s.sinks == 4);
  CHECK(s.boundary.first == 2);
  CHECK(s.boundary.last == 2);
  CHECK(s.boundary.codecs == kvq::CodecPair{"q8_0", "q8_0"});
  REQUIRE(s.tiers.size() == 2);
  CHECK(s.tiers[0].after_tokens == 4096);
  CHECK(s.tiers[1].codecs == kvq::CodecPair{"q2_1", "f16"});
  CHECK(s.window_precision == kvq::WindowPrecision::f16);
  CHECK(s.rollback_reserve == 16);
  CHECK(CacheSpec::parse(s.to_string()) == s);

  const auto t = CacheSpec::parse("v=q2_1,layers=q8_0/q8_0;q4_1/q2_1;q8_0/f32");
  CHECK(t.codecs == kvq::CodecPair{"q8_0", "q2_1"});  // k keeps its default
  REQUIRE(t.layers.size() == 3);
  CHECK(t.layers[1] == kvq::CodecPair{"q4_1", "q2_1"});
  CHECK(CacheSpec::parse(t.to_string()) == t);
  CHECK(CacheSpec::parse("k=q8_0,boundary=0+0:q4_0/q4_0") == CacheSpec{});
  CHECK(CacheSpec{}.to_string() == "k=q8_0,v=q8_0");
}

TEST_CASE("cache_spec: malformed strings are refused naming the item", "[cache][cache_spec]") {
  for (const char* bad : {"", "k", "k=", "window=abc", "window=-1", "window=12x", "boundary=2:q8_0/q8_0",
                          "boundary=2+2:q8_0", "tier=4096", "tier=x:q2_1/q2_1", "precision=f8", "colour=red",
                          "k=q8 0", "layers=q8_0/q8_0;", "boundary=1+1:a/b,boundary=1+1:a/b", "k=q8_0,,v=q8_0"}) {
    INFO(bad);
    try {
      CacheSpec::parse(bad);
      FAIL("accepted");
    } catch (const kvq::Error& e) {
      CHECK(e.code() == kvq::Errc::invalid_argument);
    }
  }
  try {
    CacheSpec::parse("k=q8_0,windw=5");
  } catch (const kvq::Error& e) {
    CHECK(std::string(e.what()).find("windw") != std::string::npos);
  }
}

TEST_CASE("cache_spec: validate checks the spec against the model", "[cache][cache_spec]") {
  const auto shape = kvq::ModelShape::hybrid(16, 4, 8, 2, 64, 1024);  // 4 KV layers
  CacheSpec::parse("boundary=2+2:q8_0/q8_0").validate(shape);
  for (const char* bad : {"boundary=3+2:q8_0/q8_0", "layers=q8_0/q8_0;q8_0/q8_0",
                          "layers=a/b;a/b;a/b;a/b,boundary=1+1:a/b", "window=128,tier=64:q2_1/q2_1",
                          "tier=300:q2_1/q2_1,tier=200:q2_1/q2_1", "tier=300:q2_1/q2_1,tier=300:q2_1/q2_1", "sinks=2000"}) {
    INFO(bad);
    CHECK_THROWS_AS(CacheSpec::parse(bad).validate(shape), kvq::Error);
  }
}

TEST_CASE("cache_spec: boundary picks KV layers by KV ordinal on a hybrid model", "[cache][cache_spec]") {
  // Seed 004's bug: on a 64-layer model with attention on every 4th layer, a
  // raw-index 2+2 rule touches only layer 63. By KV ordinal it is 3, 7, 59, 63.
  const auto shape = kvq::ModelShape::hybrid(64, 4, 24, 4, 128, 1024);
  const auto spec = CacheSpec::parse("k=q8_0,v=q2_1,boundary=2+2:q8_0/q8_0");
  std::vector<std::size_t> upgraded;
  for (std::size_t o = 0; o < shape.n_kv_layers(); ++o)
    if (spec.layer_codecs(shape, o).v == "q8_0") upgraded.push_back(shape.kv_layer(o));
  CHECK(upgraded == std::vector<std::size_t>{3, 7, 59, 63});
  CHECK(spec.layer_codecs(shape, 2).v == "q2_1");
  CHECK_THROWS_AS(spec.layer_codecs(shape, 16), kvq::Error);
}

TEST_CASE("cache_spec: per-channel tile lengths (NAME/gN) reach every place a codec is named",
          "[cache][cache_spec]") {
  const auto s = CacheSpec::parse("k=pc4/g32,v=q4_1,tier=64:pc2/g64/q2_1,boundary=1+0:pc4/g32/pc3/g64,layers=pc3/g96/f16");
  CHECK(s.codecs == kvq::CodecPair{"pc4/g32", "q4_1"});
  REQUIRE(s.tiers.size() == 1);
  CHECK(s.tiers[0].codecs == kvq::CodecPair{"pc2/g64", "q2_1"});
  CHECK(s.boundary.codecs == kvq::CodecPair{"pc4/g32", "pc3/g64"});
  REQUIRE(s.layers.size() == 1);
  CHECK(s.layers[0] == kvq::CodecPair{"pc3/g96", "f16"});
  CHECK(CacheSpec::parse(s.to_string()) == s);
  for (const char* bad : {"k=pc4/x32", "k=pc4/g", "k=pc4/g3x", "k=/g32", "tier=64:pc2/g64", "tier=64:q4_1/g32"}) {
    INFO(bad);
    CHECK_THROWS_AS(CacheSpec::parse(bad), kvq::Error);
  }
  // A cache of such a spec holds 32-token K tiles, attends, snapshots and plans.
  const auto shape = kvq::ModelShape::dense(2, 2, 1, 32, 256);
  kvq::Cache c(shape, CacheSpec::parse("k=pc4/g32,v=q4_1,window=8"));
  std::vector<float> k(32), v(32), q(64), out(64);
  for (std::size_t t = 0; t < 100; ++t) {
    for (std::size_t i = 0; i < 32; ++i) {
      k[i] = std::sin(0.3f * float(i + t));
      v[i] = std::cos(0.2f * float(i * t));
    }
    c.append(0, k.data(), v.data());
    c.append(1, k.data(), v.data());
  }
  const auto segs = kvq::test::segments_of(c, 0, kvq::StreamKind::key, 0);
  bool has_g32 = false;
  for (const auto& seg : segs) has_g32 |= seg.codec->tokens_per_tile() == 32 && seg.n_tokens > 0;
  CHECK(has_g32);
  for (std::size_t i = 0; i < 64; ++i) q[i] = 0.1f * float(i % 7);
  c.attend(0, q.data(), out.data());
  for (float x : out) CHECK(std::isfinite(x));
  kvq::Cache r(shape, CacheSpec::parse("k=pc4/g32,v=q4_1,window=8"));
  kvq::restore(r, kvq::snapshot_bytes(c));
  CHECK(kvq::snapshot_bytes(r) == kvq::snapshot_bytes(c));
  CHECK(kvq::plan_memory(shape, c.spec(), 100).total == c.memory().total);
}

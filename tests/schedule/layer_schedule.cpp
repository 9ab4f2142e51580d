#include "kvq_test.hpp"
#include "support/segments.hpp"

#include <kvq/cache/cache.hpp>

using kvq::ModelShape;
using kvq::StreamKind;

namespace {
using High = kvq::Policy<kvq::Q8_0, kvq::Q8_0>;
using Low = kvq::Policy<kvq::Q4_1, kvq::Q2_1>;

std::string_view policy_codec(const kvq::Cache& c, std::size_t layer, StreamKind kind) {
  const auto segs = kvq::test::segments_of(c, layer, kind, 0);
  return segs[segs.size() - 2].codec->name();  // the segment before the window
}
}  // namespace

TEST_CASE("layer_schedule: BoundaryLayers upgrades the first/last KV layers of a hybrid model",
          "[schedule][layer_schedule]") {
  const auto shape = ModelShape::hybrid(64, 4, 8, 2, 32, 64);
  kvq::KVCache<Low, kvq::BoundaryLayers<High>> cache(shape, {2, 2});
  CHECK(cache.spec().to_string() == "k=q4_1,v=q2_1,boundary=2+2:q8_0/q8_0");
  std::vector<std::size_t> upgraded;
  for (std::size_t layer : shape.kv_layers) {
    const bool high = policy_codec(cache, layer, StreamKind::value) == "q8_0";
    CHECK(policy_codec(cache, layer, StreamKind::key) == (high ? "q8_0" : "q4_1"));
    if (high) upgraded.push_back(layer);
  }
  CHECK(upgraded == std::vector<std::size_t>{3, 7, 59, 63});
  kvq::KVCache<Low, kvq::BoundaryLayers<High>> none(shape, {0, 0});
  CHECK(none.spec().to_string() == "k=q4_1,v=q2_1");
  kvq::KVCache<Low, kvq::BoundaryLayers<High>> first_only(ModelShape::dense(5, 2, 1, 32, 8), {1, 0});
  CHECK(policy_codec(first_only, 0, StreamKind::value) == "q8_0");
  CHECK(policy_codec(first_only, 1, StreamKind::value) == "q2_1");
  CHECK(policy_codec(first_only, 4, StreamKind::value) == "q2_1");
}

TEST_CASE("layer_schedule: UniformLayers and LayerTable", "[schedule][layer_schedule]") {
  const auto shape = ModelShape::dense(3, 2, 1, 32, 8);
  kvq::KVCache<Low> uniform(shape);
  for (std::size_t l = 0; l < 3; ++l) CHECK(policy_codec(uniform, l, StreamKind::value) == "q2_1");
  kvq::KVCache<Low, kvq::LayerTable> table(shape, kvq::LayerTable{{{"q8_0", "f16"}, {"q4_0", "q3_1"}, {"q2_1", "q2_1"}}});
  CHECK(policy_codec(table, 0, StreamKind::value) == "f16");
  CHECK(policy_codec(table, 1, StreamKind::key) == "q4_0");
  CHECK(policy_codec(table, 2, StreamKind::value) == "q2_1");
  CHECK_THROWS_AS((kvq::KVCache<Low, kvq::LayerTable>(shape, kvq::LayerTable{{{"q8_0", "q8_0"}}})), kvq::Error);
  CHECK_THROWS_AS((kvq::KVCache<Low, kvq::LayerTable>(shape, kvq::LayerTable{{{"q8_0", "nope"}, {"q8_0", "q8_0"}, {"q8_0", "q8_0"}}})),
                  kvq::Error);
}

#include "kvq_test.hpp"

#include <kvq/cache/model_shape.hpp>

#include <string>

using kvq::ModelShape;

namespace {
void expect_invalid(const ModelShape& s, const std::string& needle) {
  try {
    s.validate();
    FAIL("accepted an invalid shape: " << needle);
  } catch (const kvq::Error& e) {
    CHECK(e.code() == kvq::Errc::invalid_argument);
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
  }
}
}  // namespace

TEST_CASE("model_shape: hybrid maps KV ordinals to every 4th layer", "[cache][model_shape]") {
  const auto s = ModelShape::hybrid(64, 4, 24, 4, 128, 4096);
  s.validate();
  REQUIRE(s.n_kv_layers() == 16);
  CHECK(s.kv_layer(0) == 3);
  CHECK(s.kv_layer(15) == 63);
  CHECK(s.kv_ordinal(3) == 0);
  CHECK(s.kv_ordinal(7) == 1);
  CHECK(s.kv_ordinal(63) == 15);
  CHECK(s.kv_ordinal(4) == -1);
  CHECK(s.kv_ordinal(0) == -1);
  CHECK(s.kv_ordinal(64) == -1);
  CHECK(s.group_size() == 6);
  const auto d = ModelShape::dense(8, 8, 2, 64, 100);
  CHECK(d.n_kv_layers() == 8);
  CHECK(d.kv_ordinal(5) == 5);
  CHECK(d.kv_ordinal(8) == -1);
  CHECK(ModelShape::hybrid(10, 3, 2, 1, 32, 10, 0).kv_layers == std::vector<std::size_t>{0, 3, 6, 9});
}

TEST_CASE("model_shape: validate names each inconsistency", "[cache][model_shape]") {
  const auto good = ModelShape::dense(4, 8, 2, 64, 128);
  good.validate();
  auto s = good;
  s.n_q_heads = 6;
  s.n_kv_heads = 4;
  expect_invalid(s, "not a multiple");
  s = good, s.n_layers = 0, expect_invalid(s, "n_layers");
  s = good, s.n_kv_heads = 0, expect_invalid(s, "n_kv_heads");
  s = good, s.head_dim = 0, expect_invalid(s, "head_dim");
  s = good, s.max_context = 0, expect_invalid(s, "max_context");
  s = good, s.kv_layers = {0, 4}, expect_invalid(s, "out of range");
  s = good, s.kv_layers = {1, 1}, expect_invalid(s, "twice");
  s = good, s.kv_layers = {2, 1}, expect_invalid(s, "ascending");
  CHECK_THROWS_AS(ModelShape::hybrid(3, 4, 2, 1, 32, 10), kvq::Error);
}

// Tests of examples/llama/layer_sensitivity.hpp (kvq-ppl --calibrate): on the real wt2-byte-a
// model, the exact codec's measured NLL sensitivity is exactly 0 on every layer, a cell equals
// an independent run of the model through that single-stream spec minus the all-f32 one, 2-bit
// K or V on every layer in turn costs NLL in sum, and bad codec lists are refused.
#include "kvq_test.hpp"
#include "support/real_model.hpp"

#include "layer_sensitivity.hpp"

#include <vector>

using namespace kvq::llama;

TEST_CASE("layer sensitivity: f32 is 0, cells are single-stream NLL increases", "[examples][calibrate][model]") {
  const auto real = kvq::test::load_real_model();
  if (!real) return;
  const auto& model = real->model;
  const int n = 96;
  std::vector<int> in, tgt;
  real->first_bytes(n, in, tgt);
  const auto base = kvq::CacheSpec::parse("window=16,sinks=2");
  const auto t = measure_nll_sensitivity(model, in, tgt, {"f32", "q2_1"}, {"f32", "q2_1"}, base);
  const std::size_t L = static_cast<std::size_t>(model.config().n_layers);
  REQUIRE(t.n_layers() == L);
  CHECK(t.metric == "nll");
  CHECK(t.window == 16);
  CHECK(t.head_dim == 64);
  double k_sum = 0.0, v_sum = 0.0;
  for (std::size_t l = 0; l < L; ++l) {
    CHECK(t.damage[0][l][0] == 0.0);
    CHECK(t.damage[1][l][0] == 0.0);
    k_sum += t.damage[0][l][1];
    v_sum += t.damage[1][l][1];
  }
  CHECK(k_sum > 0.0);
  CHECK(v_sum > 0.0);
  // Layer 3's V cell, recomputed with a fresh cache through the model.
  auto mean = [&](const kvq::CacheSpec& spec) {
    CacheAttention cache(model.config().attention_shape(), n, spec);
    double s = 0.0;
    for (double x : model.nll(in, tgt, cache, 64)) s += x;
    return s / n;
  };
  const double ref = mean(kvq::CacheSpec::parse("k=f32,v=f32,window=16,sinks=2"));
  const double cell = mean(kvq::tools::single_stream_spec(base, L, 3, kvq::StreamKind::value, "q2_1"));
  CHECK(t.damage[1][3][1] == Approx(cell - ref).margin(1e-9));
  CHECK_THROWS_AS(measure_nll_sensitivity(model, in, tgt, {"f32"}, {"pc2"}, base), kvq::Error);
  CHECK_THROWS_AS(measure_nll_sensitivity(model, in, tgt, {"bogus"}, {"f32"}, base), kvq::Error);
}

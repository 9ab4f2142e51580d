// Tests of tools/common/kv_eval.hpp, the engine of `kvq eval`: exact storage measures zero
// error, the metrics are consistent on a synthetic dump (errors grow from q8_0 to q2_1, a
// window covering everything is exact again, bits/value are the codecs'), and on the real
// wt2-byte-a dumps q8_0's errors are far below q2_1's.
#include "kvq_test.hpp"
#include "support/synthetic_dumps.hpp"

#include "kv_eval.hpp"

#include <cmath>

namespace {

kvq::tools::KvDumps eval_dumps(std::size_t L, std::size_t HQ, std::size_t HK, std::size_t T, std::size_t D) {
  return kvq::test::synthetic_dumps(L, HQ, HK, T, D, 5);
}

}  // namespace

TEST_CASE("kvq eval metrics on a synthetic dump", "[tools][eval]") {
  const auto d = eval_dumps(2, 4, 2, 160, 32);
  kvq::tools::EvalOptions opt;
  opt.stride = 8;
  const auto exact = kvq::tools::evaluate_cache(d, kvq::CacheSpec::parse("k=f32,v=f32"), opt);
  REQUIRE(exact.layers.size() == 2);
  CHECK(exact.total.k_rel() == 0.0);
  CHECK(exact.total.v_rel() == 0.0);
  CHECK(exact.total.score_rel() < 1e-6);
  CHECK(exact.total.out_rel() < 1e-6);
  CHECK(exact.total.kl_mean() < 1e-9);
  CHECK(exact.total.k_bits() == 32.0);
  CHECK(exact.total.n_queries == 2 * 4 * 20);  // 20 positions (7, 15, ..., 159) x 4 heads x 2 layers

  const auto q8 = kvq::tools::evaluate_cache(d, kvq::CacheSpec::parse("k=q8_0,v=q8_0"), opt);
  const auto q2 = kvq::tools::evaluate_cache(d, kvq::CacheSpec::parse("k=q2_1,v=q2_1"), opt);
  CHECK(q8.total.k_bits() == Approx(8.5));
  CHECK(q2.total.v_bits() == Approx(3.0));
  CHECK(q8.total.k_rel() > 0.0);
  CHECK(q8.total.k_rel() < 0.02);
  CHECK(q2.total.k_rel() > 5 * q8.total.k_rel());
  CHECK(q2.total.out_rel() > 5 * q8.total.out_rel());
  CHECK(q2.total.kl_mean() > 10 * q8.total.kl_mean());
  CHECK(q8.total.kl_max >= q8.total.kl_mean());

  // A window holding every token is exact; one holding the newest 40 is in between.
  const auto all = kvq::tools::evaluate_cache(d, kvq::CacheSpec::parse("k=q2_1,v=q2_1,window=160"), opt);
  CHECK(all.total.out_rel() < 1e-6);
  const auto w40 = kvq::tools::evaluate_cache(d, kvq::CacheSpec::parse("k=q2_1,v=q2_1,window=40"), opt);
  CHECK(w40.total.out_rel() < q2.total.out_rel());
  CHECK(w40.total.out_rel() > all.total.out_rel());

  opt.layers = {1};
  const auto one = kvq::tools::evaluate_cache(d, kvq::CacheSpec::parse("k=q8_0,v=q8_0"), opt);
  CHECK(one.total.k_err2 == q8.layers[1].k_err2);
  opt.layers = {2};
  CHECK_THROWS_AS(kvq::tools::evaluate_cache(d, kvq::CacheSpec::parse("k=q8_0,v=q8_0"), opt), kvq::Error);
}

TEST_CASE("kvq eval on the wt2-byte-a dumps: q8_0 far below q2_1", "[tools][eval][model]") {
  const auto shared = kvq::test::shared_dir();
  const auto dir = shared / "data/kv-dumps/wt2-byte-a";
  if (shared.empty() || !std::filesystem::exists(dir / "q.npy")) {
    WARN("skipped: ../shared/data/kv-dumps/wt2-byte-a not found (set KVQ_SHARED_DIR)");
    return;
  }
#ifdef NDEBUG
  const std::size_t T = 1024;
#else
  const std::size_t T = 128;
#endif
  const auto d = kvq::tools::load_kv_dumps(dir, T);
  CHECK(d.layers == 8);
  CHECK(d.q_heads == 8);
  CHECK(d.kv_heads == 2);
  CHECK(d.head_dim == 64);
  CHECK(d.tokens == T);
  kvq::tools::EvalOptions opt;
  opt.stride = 32;
  const auto q8 = kvq::tools::evaluate_cache(d, kvq::CacheSpec::parse("k=q8_0,v=q8_0"), opt);
  const auto q2 = kvq::tools::evaluate_cache(d, kvq::CacheSpec::parse("k=q2_1,v=q2_1"), opt);
  INFO("q8_0 out " << q8.total.out_rel() << " KL " << q8.total.kl_mean() << "; q2_1 out " << q2.total.out_rel()
                   << " KL " << q2.total.kl_mean());
  CHECK(q8.total.k_rel() < 0.02);
  CHECK(q8.total.out_rel() < 0.02);
  CHECK(q2.total.k_rel() > 10 * q8.total.k_rel());
  CHECK(q2.total.out_rel() > 10 * q8.total.out_rel());
  CHECK(q2.total.kl_mean() > 100 * q8.total.kl_mean());
}

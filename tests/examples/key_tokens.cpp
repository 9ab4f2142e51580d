// Tests of examples/llama/key_tokens.hpp (kvq-ppl's key-token perplexity): the blocked
// short-context NLL equals, token by token, the NLL of an independent forward pass over
// exactly the context it claims ([BOS] + the last short_tokens .. short_tokens + block - 1
// inputs), with and without BOS; targets with no longer context get their full NLL; and the
// key-token rule selects exactly the tokens past the margin.
#include "kvq_test.hpp"
#include "support/real_model.hpp"

#include "key_tokens.hpp"

#include <cmath>
#include <vector>

using namespace kvq::llama;

TEST_CASE("key tokens: margin rule", "[examples][key_tokens]") {
  const std::vector<double> full{1.0, 2.0, 0.5, 3.0, 1.0}, shorter{1.0, 2.6, 0.9, 2.0, 1.5000001};
  CHECK(key_token_indices(full, shorter, 0.5) == std::vector<std::size_t>{1, 4});
  CHECK(key_token_indices(full, shorter, 0.0) == std::vector<std::size_t>{1, 2, 4});
  CHECK(key_token_indices(full, shorter, 1.0).empty());
  CHECK_THROWS_AS(key_token_indices(full, std::vector<double>{1.0}, 0.5), kvq::Error);
}

TEST_CASE("key tokens: short-context NLL equals a forward pass over exactly that context",
          "[examples][key_tokens][model]") {
  const auto real = kvq::test::load_real_model();
  if (!real) return;
  const auto& [model, text] = *real;
  const int n = 30;
  ExactAttention exact(model.config().attention_shape(), n);
  for (bool bos : {true, false}) {
    std::vector<int> in, tgt;
    if (bos) in.push_back(kByteBos);
    for (int i = 0; i < n; ++i) {
      if (!bos || i + 1 < n) in.push_back(byte_token(text[static_cast<std::size_t>(i)]));
      if (bos || i > 0) tgt.push_back(byte_token(text[static_cast<std::size_t>(i)]));
    }
    if (!bos) in.pop_back();
    REQUIRE(in.size() == tgt.size());
    const std::size_t lead = bos ? 1 : 0;
    for (int block : {1, 4}) {
      const ShortContext sc{8, block};
      const auto full = model.nll(in, tgt, exact);
      const auto got = short_context_nll(model, in, tgt, bos, sc, exact);
      REQUIRE(got.size() == in.size());
      std::size_t differ = 0;
      for (std::size_t i = 0; i < in.size(); ++i) {
        if (i < 8 + lead) {  // the full context is at most 8 inputs: nothing to cut
          REQUIRE(got[i] == Approx(full[i]).margin(1e-5));
          continue;
        }
        // The block of target i starts at j0; its context is the 8 inputs before j0's target, up to i.
        const std::size_t j0 = 8 + lead + (i - 8 - lead) / block * block, from = j0 + 1 - 8;
        std::vector<int> ctx, ctx_tgt;
        if (bos) ctx.push_back(kByteBos), ctx_tgt.push_back(tgt[from - 1]);
        for (std::size_t j = from; j <= i; ++j) ctx.push_back(in[j]), ctx_tgt.push_back(tgt[j]);
        REQUIRE(ctx.size() - lead == 8 + (i - j0));
        REQUIRE(ctx.size() - lead <= std::size_t(8 + block - 1));
        const double want = model.nll(ctx, ctx_tgt, exact).back();
        REQUIRE(got[i] == Approx(want).margin(1e-5));
        differ += std::fabs(got[i] - full[i]) > 1e-3;
      }
      CHECK(differ > 0);  // cutting the context changes predictions
    }
  }
  CHECK_THROWS_AS(short_context_nll(model, std::vector<int>{1, 2}, std::vector<int>{2}, true, {}, exact), kvq::Error);
  CHECK_THROWS_AS(short_context_nll(model, std::vector<int>{1}, std::vector<int>{2}, true, {0, 4}, exact), kvq::Error);
}

// Key tokens (LongPPL, Fang et al. 2024): the tokens a model predicts better because it sees
// the long context, which is where a compressed cache's old tokens are read.
//
// Perplexity over all tokens is dominated by tokens a few bytes of context predict as well as
// the whole window does; a codec that damages old tokens barely moves it. LongPPL scores
// only the tokens whose NLL with the full context is lower than with a short one by a margin:
// here the short context is the last `short_tokens` inputs (after BOS when the window has
// one), and a token is key when  nll_short - nll_full > margin  (nats), both measured with
// exact attention, so the key set is a property of the model and text, not of the cache.
//
// The short-context NLL is exact per token only with one forward pass per token. Targets are
// instead scored in blocks of `block`: one pass over [BOS] + the `short_tokens` inputs before
// the block + the block gives target i of the block a context of short_tokens + (its offset in
// the block) inputs, i.e. between short_tokens and short_tokens + block - 1. Targets whose full
// context is not longer than short_tokens get their full-context NLL (they cannot be key).
#pragma once

#include "llama_model.hpp"

#include <kvq/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

namespace kvq::llama {

struct ShortContext {
  int short_tokens = 256;  // inputs kept before each target (bytes for byte models)
  int block = 64;          // targets scored per forward pass (context short_tokens .. +block-1)
};

// NLL (nats) of targets[i] given only the last `sc.short_tokens` of inputs[0..i] (plus
// inputs[0] when `has_bos`: inputs[0] is then BOS and stays in front). inputs/targets as for
// LlamaModel::nll: targets[i] follows inputs[0..i].
inline std::vector<double> short_context_nll(const LlamaModel& model, std::span<const int> inputs,
                                             std::span<const int> targets, bool has_bos, const ShortContext& sc,
                                             AttentionBackend& backend, int chunk = 64) {
  kvq::detail::require(inputs.size() == targets.size(), Errc::shape_mismatch,
                       "short_context_nll: inputs and targets differ in length");
  kvq::detail::require(sc.short_tokens > 0 && sc.block > 0, Errc::invalid_argument,
                       "short_context_nll: short_tokens and block must be positive");
  const std::size_t n = inputs.size(), S = static_cast<std::size_t>(sc.short_tokens),
                    B = static_cast<std::size_t>(sc.block), lead = has_bos ? 1 : 0;
  // Target i sees inputs[0..i]: i + 1 inputs, of which i + 1 - lead after BOS. Up to first_cut
  // that is at most S, so the full context is the short one.
  const std::size_t first_cut = std::min(n, S + lead);
  std::vector<double> out(n);
  if (first_cut > 0) {
    const auto head = model.nll(inputs.first(first_cut), targets.first(first_cut), backend, chunk);
    std::copy(head.begin(), head.end(), out.begin());
  }
  std::vector<int> in, tgt;
  for (std::size_t j0 = first_cut; j0 < n; j0 += B) {
    const std::size_t j1 = std::min(n, j0 + B), from = j0 + 1 - S;  // inputs[from..j0] are the S before j0's target
    in.clear();
    tgt.clear();
    if (has_bos) {
      in.push_back(inputs[0]);
      tgt.push_back(targets[from - 1]);  // what BOS "predicts" here is never read
    }
    for (std::size_t i = from; i < j1; ++i) {
      in.push_back(inputs[i]);
      tgt.push_back(targets[i]);
    }
    const auto nll = model.nll(in, tgt, backend, chunk);
    for (std::size_t i = j0; i < j1; ++i) out[i] = nll[lead + i - from];
  }
  return out;
}

// Indices i with short_nll[i] - full_nll[i] > margin.
inline std::vector<std::size_t> key_token_indices(std::span<const double> full_nll, std::span<const double> short_nll,
                                                  double margin) {
  kvq::detail::require(full_nll.size() == short_nll.size(), Errc::shape_mismatch,
                       "key_token_indices: full and short NLL differ in length");
  std::vector<std::size_t> keys;
  for (std::size_t i = 0; i < full_nll.size(); ++i)
    if (short_nll[i] - full_nll[i] > margin) keys.push_back(i);
  return keys;
}

}  // namespace kvq::llama

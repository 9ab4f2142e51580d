// Per-layer K/V sensitivity of a llama model to each codec: the NLL source of `kvq calibrate`
// (run by `kvq-ppl --calibrate FILE`; the table format and the allocator are
// tools/common/calibrate.hpp).
//
// For each KV layer l, side (K or V) and codec c the model runs over the same token window
// with every layer's K/V in a kvq::Cache whose spec stores all streams exactly (f32) except
// layer l's K (or V), stored with c; window and sinks as in `base`. The damage is the mean NLL
// per token minus that of the all-f32 cache of the same spec: the same computation path, so the
// exact codec scores exactly 0. Decode-mode prefill (each query sees the cache as generation
// would), the cache's own attention kernels.
#pragma once

#include "cache_attention.hpp"
#include "calibrate.hpp"
#include "llama_model.hpp"

#include <kvq/cache/cache_spec.hpp>
#include <kvq/core/error.hpp>

#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace kvq::llama {

// Mean NLL (nats per token) of `targets` given `inputs` with the cache of `spec`.
inline double mean_nll_through(const LlamaModel& model, std::span<const int> inputs, std::span<const int> targets,
                               const kvq::CacheSpec& spec, int chunk) {
  CacheAttention cache(model.config().attention_shape(), static_cast<int>(inputs.size()), spec);
  const auto nll = model.nll(inputs, targets, cache, chunk);
  double sum = 0.0;
  for (double x : nll) sum += x;
  return sum / static_cast<double>(nll.size());
}

// `progress(done, total)` is called after every measured cell.
inline kvq::tools::SensitivityTable measure_nll_sensitivity(
    const LlamaModel& model, std::span<const int> inputs, std::span<const int> targets,
    const std::vector<std::string>& key_codecs, const std::vector<std::string>& value_codecs,
    const kvq::CacheSpec& base, int chunk = 64, const std::function<void(std::size_t, std::size_t)>& progress = {}) {
  namespace kt = kvq::tools;
  const auto& c = model.config();
  kvq::detail::require(!inputs.empty() && inputs.size() == targets.size(), Errc::invalid_argument,
                       "measure_nll_sensitivity: inputs and targets must be non-empty and of equal length");
  kt::check_codecs(key_codecs, kvq::StreamKind::key, static_cast<std::size_t>(c.head_dim));
  kt::check_codecs(value_codecs, kvq::StreamKind::value, static_cast<std::size_t>(c.head_dim));
  kt::SensitivityTable t;
  t.metric = "nll";
  t.window = base.window;
  t.sinks = base.sinks;
  t.q_heads = static_cast<std::size_t>(c.n_heads);
  t.kv_heads = static_cast<std::size_t>(c.n_kv_heads);
  t.head_dim = static_cast<std::size_t>(c.head_dim);
  t.codecs[0] = key_codecs;
  t.codecs[1] = value_codecs;
  const auto L = static_cast<std::size_t>(c.n_layers);
  for (int side = 0; side < 2; ++side) t.damage[side].assign(L, std::vector<double>(t.codecs[side].size(), 0.0));
  const double ref =
      mean_nll_through(model, inputs, targets, kt::single_stream_spec(base, L, 0, kvq::StreamKind::key, "f32"), chunk);
  const std::size_t total = L * (key_codecs.size() + value_codecs.size());
  std::size_t done = 0;
  for (std::size_t l = 0; l < L; ++l)
    for (int side = 0; side < 2; ++side) {
      const auto kind = side == 0 ? kvq::StreamKind::key : kvq::StreamKind::value;
      for (std::size_t i = 0; i < t.codecs[side].size(); ++i, ++done) {
        // f32 is measured too: the reference spec itself, so exactly 0 (tested)
        t.damage[side][l][i] =
            mean_nll_through(model, inputs, targets, kt::single_stream_spec(base, L, l, kind, t.codecs[side][i]), chunk) - ref;
        if (progress) progress(done + 1, total);
      }
    }
  return t;
}

}  // namespace kvq::llama

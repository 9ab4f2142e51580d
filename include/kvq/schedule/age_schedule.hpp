// AgeSchedule: how precision falls with token age.
//
// Attention concentrates on recent tokens, so the newest ones are kept exact
// (seed 002: turbo4 + 128 recent FP32 tokens recovers +3.8% -> +0.6% PPL),
// the first few "attention sink" tokens too, and old tokens may be demoted to
// a cheaper codec. Window sizes are run-time values; the run-time equivalent
// is CacheSpec::{window, sinks, tiers, window_precision, heavy}.
#pragma once

#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/policy.hpp>

#include <cstddef>
#include <string>

namespace kvq {

// Every token is compressed as soon as its tile is complete.
struct NoWindow {
  using codecs = detail::CodecList<>;
  void apply(CacheSpec& spec) const {
    spec.window = 0;
    spec.sinks = 0;
    spec.tiers.clear();
  }
};

// The newest `tokens` tokens and the first `sinks` tokens stay exact.
struct RecentWindow {
  using codecs = detail::CodecList<>;
  std::size_t tokens = 128;
  std::size_t sinks = 0;
  WindowPrecision precision = WindowPrecision::f32;
  void apply(CacheSpec& spec) const {
    spec.window = tokens;
    spec.sinks = sinks;
    spec.window_precision = precision;
    spec.tiers.clear();
  }
};

// Newest `recent` exact, the next `tier_tokens` at the cache's Policy, older
// tokens re-encoded (decode, then encode) with LowerPolicy.
template <class LowerPolicy>
struct Tiered {
  using codecs = detail::CodecList<typename LowerPolicy::key_codec, typename LowerPolicy::value_codec>;
  std::size_t recent = 128;
  std::size_t tier_tokens = 4096;
  std::size_t sinks = 0;
  WindowPrecision precision = WindowPrecision::f32;
  void apply(CacheSpec& spec) const {
    spec.window = recent;
    spec.sinks = sinks;
    spec.window_precision = precision;
    spec.tiers = {TierSpec{recent + tier_tokens,
                           {std::string(LowerPolicy::key_codec::name), std::string(LowerPolicy::value_codec::name)}}};
  }
};

// Any age schedule, plus up to `heavy` older tokens per KV head kept exact
// because they drew long-range attention (heavy hitters, docs/CACHE.md):
// AttentionAware<Tiered<Q2_1>>{{128, 4096, 4}, 256}.
template <class Age>
struct AttentionAware {
  using codecs = typename Age::codecs;
  Age age{};
  std::size_t heavy = 256;
  void apply(CacheSpec& spec) const {
    age.apply(spec);
    spec.heavy = heavy;
  }
};

}  // namespace kvq

// LayerSchedule: which codecs each KV layer uses (precision by depth).
//
// Schedules are run-time parameters with compile-time codec types: the typed
// KVCache applies one to its CacheSpec, where the run-time equivalent lives
// (CacheSpec::boundary, CacheSpec::layers). Layers are counted by KV-layer
// ordinal so hybrid models are targeted as intended (seed 004).
#pragma once

#include <kvq/cache/cache_spec.hpp>
#include <kvq/cache/policy.hpp>

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace kvq {

// Every KV layer uses the cache's Policy.
struct UniformLayers {
  using codecs = detail::CodecList<>;
  void apply(CacheSpec&) const {}
};

// The first `first` and last `last` KV layers use HighPolicy, the rest the
// cache's Policy. Seed 004's Boundary V: 2+2 with q8_0 V over turbo2 V.
template <class HighPolicy>
struct BoundaryLayers {
  using codecs = detail::CodecList<typename HighPolicy::key_codec, typename HighPolicy::value_codec>;
  std::size_t first = 2;
  std::size_t last = 2;
  void apply(CacheSpec& spec) const {
    spec.boundary = BoundarySpec{first, last,
                                 {std::string(HighPolicy::key_codec::name), std::string(HighPolicy::value_codec::name)}};
    if (first + last == 0) spec.boundary = BoundarySpec{};
  }
};

// Explicit K/V codec names per KV layer (one entry per KV layer, by ordinal),
// e.g. from a sensitivity sweep.
struct LayerTable {
  using codecs = detail::CodecList<>;
  std::vector<CodecPair> layers;
  void apply(CacheSpec& spec) const { spec.layers = layers; }
};

}  // namespace kvq

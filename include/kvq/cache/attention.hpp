// The attention driver's inner loops over one segment of a stream.
//
// Each runs one codec over a contiguous run of tiles for a *group* of queries
// (the query heads sharing a KV head, GQA), in the codec's working space. The
// signature is group-shaped on purpose: codecs with Highway kernels (uniform,
// turbo, per-channel) run the dispatched kernel, which reads each tile once
// per group; any other codec (a user's) runs its scalar codec calls tile by
// tile. The exact window formats (f32, f16) have kernels too.
#pragma once

#include <kvq/cache/exact_codec.hpp>
#include <kvq/codec/registry.hpp>
#include <kvq/kernels/dispatch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace kvq::detail {

// Runs `run(typed_codec)` if `codec` is one of Cs; false if none matched.
template <class... Cs, class Run>
bool with_kernel_codec(const AnyCodec& codec, Run&& run) {
  return ((codec.get_if<Cs>() ? (run(*codec.get_if<Cs>()), true) : false) || ...);
}
template <class Run>
bool with_simd_kernel(const AnyCodec& codec, Run&& run) {
  return with_kernel_codec<Q8_0, Q4_0, Q4_1, Q3_1, Q2_1, Turbo2, Turbo3, Turbo4, PerChannel<2>, PerChannel<3>,
                           PerChannel<4>, ExactF32, ExactF16>(codec, std::forward<Run>(run));
}
// Codecs whose working space is model space (prepare_query and finish_output
// are copies): the kernels read the caller's queries and add into its output.
template <class C>
inline constexpr bool kWorksInModelSpace = !(std::is_same_v<C, Turbo2> || std::is_same_v<C, Turbo3> ||
                                             std::is_same_v<C, Turbo4>);

// out[i * out_stride + t] = q_i . k_t for the n_tiles * tokens_per_tile keys;
// q_i = q + i * q_stride is in model space (prepared here, once per query).
inline void segment_scores(const AnyCodec& codec, const float* q, std::size_t n_q, std::size_t q_stride,
                           const std::byte* tiles, std::size_t n_tiles, float* out, std::size_t out_stride) {
  if (n_tiles == 0) return;
  if (with_simd_kernel(codec, [&](const auto& c) {
        if constexpr (kWorksInModelSpace<std::decay_t<decltype(c)>>) {
          kernels::scores(c, q, n_q, q_stride, tiles, n_tiles, out, out_stride);
        } else {
          const std::size_t d = c.head_dim();
          std::vector<float> work(n_q * d);
          for (std::size_t i = 0; i < n_q; ++i) c.prepare_query(q + i * q_stride, work.data() + i * d);
          kernels::scores(c, work.data(), n_q, d, tiles, n_tiles, out, out_stride);
        }
      }))
    return;
  const std::size_t d = codec.head_dim(), g = codec.tokens_per_tile(), bt = codec.bytes_per_tile();
  std::vector<float> work(d);
  for (std::size_t i = 0; i < n_q; ++i) {
    codec.prepare_query(q + i * q_stride, work.data());
    float* o = out + i * out_stride;
    for (std::size_t t = 0; t < n_tiles; ++t) codec.scores(work.data(), tiles + t * bt, o + t * g);
  }
}

// out_i += sum_t w_i[t] v_t for query i, with w_i = w + i * w_stride; the sum
// runs in the codec's working space and is mapped back once per query.
inline void segment_accumulate(const AnyCodec& codec, const float* w, std::size_t n_q, std::size_t w_stride,
                               const std::byte* tiles, std::size_t n_tiles, float* out, std::size_t out_stride) {
  if (n_tiles == 0) return;
  if (with_simd_kernel(codec, [&](const auto& c) {
        if constexpr (kWorksInModelSpace<std::decay_t<decltype(c)>>) {
          kernels::accumulate(c, w, n_q, w_stride, tiles, n_tiles, out, out_stride);  // straight into out
        } else {
          const std::size_t d = c.head_dim();
          std::vector<float> acc(n_q * d, 0.0f), model(d);
          kernels::accumulate(c, w, n_q, w_stride, tiles, n_tiles, acc.data(), d);
          for (std::size_t i = 0; i < n_q; ++i) {
            c.finish_output(acc.data() + i * d, model.data());
            float* o = out + i * out_stride;
            for (std::size_t j = 0; j < d; ++j) o[j] += model[j];
          }
        }
      }))
    return;
  const std::size_t d = codec.head_dim(), g = codec.tokens_per_tile(), bt = codec.bytes_per_tile();
  std::vector<float> acc(d), model(d);
  for (std::size_t i = 0; i < n_q; ++i) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const float* wi = w + i * w_stride;
    for (std::size_t t = 0; t < n_tiles; ++t) codec.accumulate(acc.data(), wi + t * g, tiles + t * bt);
    codec.finish_output(acc.data(), model.data());
    float* o = out + i * out_stride;
    for (std::size_t j = 0; j < d; ++j) o[j] += model[j];
  }
}

}  // namespace kvq::detail

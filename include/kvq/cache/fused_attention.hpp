// The fused attention pass: one walk over a KV head's K and V tiles per block
// of queries, with an online (running-max) softmax, so the cache is read once
// per step and no O(context) buffer exists.
//
// What it computes, for each query i of a block (scalar description, the
// oracle of tests/cache/fused_attention.cpp): with s_t = q_i . k_t over the
// positions t < visible_i,
//     out_i = sum_t exp(scale s_t - M) v_t / sum_t exp(scale s_t - M),
// M = max_t scale s_t, every product taken in the codec's working space.
//
// How: the stream of one KV head is a list of *runs* (TileRun: whole tiles of
// one codec from one position). The pass takes K in chunks of whole K tiles
// (~128 tokens, a few KB: they stay in L1), scores the chunk for every query
// of the block with the codec's kernel, turns the scores into weights with
// kernels::online_softmax (vector exp; it reports how much the running max
// moved, and what was accumulated so far is rescaled by that factor), then
// accumulates V over the same positions. K and V may be cut into runs and
// tiles differently (per-channel K tiles of 128 tokens beside row-wise V, K
// and V tiers of different ages): weights of positions whose V tile is not
// complete yet wait in the weight buffer (fewer than one V tile's worth)
// and are rescaled with the rest. A run is one page of a segment (a
// contiguous piece of it); consecutive runs of one codec share the prepared
// query and the working-space accumulator, so a page boundary costs one
// more kernel call and nothing else.
//
// The pass works on a token range [begin, end) of the runs (tile boundaries
// of both streams) and returns an unnormalized partial (m, l, acc): ranges
// run on different threads are merged by log-sum-exp (flash-decoding).
#pragma once

#include <kvq/cache/attention.hpp>
#include <kvq/cache/exact_codec.hpp>
#include <kvq/kernels/dispatch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

namespace kvq {

// How the fused pass multiplies weights with values of the formats that have
// reduced-precision products (q4_0, q4_1, q3_1, q2_1; int8 also q8_0): f32 (kernels::accumulate),
// bf16 (kernels::accumulate_bf16) or int8 (kernels::accumulate_int8); the
// contracts are in kernels/dispatch.hpp and docs/FORMATS.md.
enum class ValueProducts { f32, bf16, int8 };

}  // namespace kvq

namespace kvq::detail {

// parallel_for that runs every task on the calling thread.
struct SerialFor {
  template <class Fn>
  void operator()(std::size_t n, Fn&& fn) const {
    for (std::size_t i = 0; i < n; ++i) fn(i);
  }
};

// Whole tiles of one codec, from position `first`.
struct TileRun {
  const AnyCodec* codec = nullptr;
  std::size_t first = 0;
  const std::byte* tiles = nullptr;
  std::size_t n_tiles = 0;
  std::size_t tile_tokens = 1;
  std::size_t tile_bytes = 0;
  std::size_t end() const noexcept { return first + n_tiles * tile_tokens; }
};

// The kernels of one run's codec, resolved once per call (AnyCodec::get_if is
// a dynamic_cast: too slow per chunk). `codec` is the typed codec for the
// kernel paths, the AnyCodec for the generic one.
struct RunKernels {
  using Fn = void (*)(const void*, const float*, std::size_t, std::size_t, const std::byte*, std::size_t, float*,
                      std::size_t);
  using Int8Fn = void (*)(const void*, const kernels::Int8Queries&, const std::byte*, std::size_t, float*,
                          std::size_t);
  Fn scores = nullptr;
  Fn accumulate = nullptr;
  Int8Fn scores_int8 = nullptr;  // int8-query scores (uniform-format keys), when enabled
  const void* codec = nullptr;
  bool model_space = false;  // accumulate adds straight into the model-space output
  bool tile_products = false;  // accumulate runs AMX tiles: batch its calls (kValueBatchTokens)
};

template <class C>
RunKernels typed_kernels(const C& codec, bool int8_scores, ValueProducts values) {
  RunKernels k;
  if constexpr (kernels::kHasInt8Scores<C>)
    if (int8_scores && kernels::supports_int8_scores(codec))
      k.scores_int8 = [](const void* c, const kernels::Int8Queries& q, const std::byte* t, std::size_t nt, float* out,
                         std::size_t os) { kernels::scores(*static_cast<const C*>(c), q, t, nt, out, os); };
  k.scores = [](const void* c, const float* q, std::size_t n_q, std::size_t qs, const std::byte* t, std::size_t nt,
                float* out, std::size_t os) { kernels::scores(*static_cast<const C*>(c), q, n_q, qs, t, nt, out, os); };
  k.accumulate = [](const void* c, const float* w, std::size_t n_q, std::size_t ws, const std::byte* t,
                    std::size_t nt, float* acc, std::size_t as) {
    kernels::accumulate(*static_cast<const C*>(c), w, n_q, ws, t, nt, acc, as);
  };
  if constexpr (kernels::kHasTileInt8Scores<C>)
    if (int8_scores && kernels::supports_int8_scores(codec))
      k.scores = [](const void* c, const float* q, std::size_t n_q, std::size_t qs, const std::byte* t,
                    std::size_t nt, float* out, std::size_t os) {
        kernels::scores_int8(*static_cast<const C*>(c), q, n_q, qs, t, nt, out, os);
      };
  if constexpr (kernels::kHasBf16Accumulate<C>)
    if (values == ValueProducts::bf16)
      k.accumulate = [](const void* c, const float* w, std::size_t n_q, std::size_t ws, const std::byte* t,
                        std::size_t nt, float* acc, std::size_t as) {
        kernels::accumulate_bf16(*static_cast<const C*>(c), w, n_q, ws, t, nt, acc, as);
      };
  if constexpr (kernels::kHasBf16Accumulate<C>) k.tile_products = values == ValueProducts::bf16 && kernels::amx_accumulate_active();
  if constexpr (kernels::kHasInt8Accumulate<C>)
    if (values == ValueProducts::int8)
      k.accumulate = [](const void* c, const float* w, std::size_t n_q, std::size_t ws, const std::byte* t,
                        std::size_t nt, float* acc, std::size_t as) {
        kernels::accumulate_int8(*static_cast<const C*>(c), w, n_q, ws, t, nt, acc, as);
      };
  k.codec = &codec;
  k.model_space = kWorksInModelSpace<C>;
  return k;
}

// Any other codec: its own per-tile calls (q already prepared).
inline RunKernels generic_kernels(const AnyCodec& codec) {
  RunKernels k;
  k.scores = [](const void* p, const float* q, std::size_t n_q, std::size_t qs, const std::byte* t, std::size_t nt,
                float* out, std::size_t os) {
    const AnyCodec& c = *static_cast<const AnyCodec*>(p);
    const std::size_t g = c.tokens_per_tile(), bt = c.bytes_per_tile();
    for (std::size_t i = 0; i < n_q; ++i)
      for (std::size_t j = 0; j < nt; ++j) c.scores(q + i * qs, t + j * bt, out + i * os + j * g);
  };
  k.accumulate = [](const void* p, const float* w, std::size_t n_q, std::size_t ws, const std::byte* t,
                    std::size_t nt, float* acc, std::size_t as) {
    const AnyCodec& c = *static_cast<const AnyCodec*>(p);
    const std::size_t g = c.tokens_per_tile(), bt = c.bytes_per_tile();
    for (std::size_t i = 0; i < n_q; ++i)
      for (std::size_t j = 0; j < nt; ++j) c.accumulate(acc + i * as, w + i * ws + j * g, t + j * bt);
  };
  k.codec = &codec;
  return k;
}

// int8_scores: K runs of the uniform and turbo formats score int8-quantized queries
// (kernels::quantize_queries), per-channel K its per-tile int8 folded queries
// (kernels::scores_int8); the accuracy contracts are in
// reference/int8_query.hpp). values: the products of V runs (ValueProducts).
inline RunKernels resolve_kernels(const AnyCodec& codec, bool int8_scores = false,
                                  ValueProducts values = ValueProducts::f32) {
  RunKernels k;
  if (with_simd_kernel(codec, [&](const auto& c) { k = typed_kernels(c, int8_scores, values); })) return k;
  return generic_kernels(codec);
}

// The queries of one block: n_q rows in model space, query i at q(i), seeing
// positions [0, visible[i]).
struct QueryBlock {
  std::size_t n_q = 0;
  const float* const* q = nullptr;
  const std::uint32_t* visible = nullptr;
  float scale = 1.0f;
};

// Unnormalized result over a token range: m[i] running max of scale * s,
// l[i] = sum exp(scale s - m[i]), acc[i * d ..] = sum exp(scale s - m[i]) v.
struct Partial {
  float* m;
  float* l;
  float* acc;
};

inline constexpr std::size_t kChunkTokens = 128;  // K tokens scored per step
// Values on AMX tiles are accumulated once this many weights wait (and at the
// end): one tile-product call per 512 tokens, not per chunk. Each switch
// between the tile products and the AVX-512 score kernels cost ~0.5-0.9 us,
// which 128-token chunks paid 256 times in a 32K-token step. The f32 kernels
// keep one call per chunk (batching them cost 3-5% at GQA 8).
inline constexpr std::size_t kValueBatchTokens = 512;
// Queries per block: a whole GQA group for decode; for prefill, 64 queries
// share each K/V chunk while it is in L1/L2 (with 16 a 512-token chunk at
// 32K tokens re-read the layer 4x as often: 0.23 vs 0.34 of the FMA peak).
inline constexpr std::size_t kMaxBlockQueries = 64;

// Per-thread working memory of the pass: grows to the largest shape seen and
// stays, so steady-state calls do not allocate.
struct FusedWorkspace {
  std::vector<float> buf;
  std::vector<std::uint32_t> valid;
  std::vector<float> partial;  // the caller's Partial, when it has none of its own
  kernels::Int8Queries q_int8;  // the block's queries quantized, for int8 score kernels
  float* q_work = nullptr;   // [n_q][d]
  float* acc_work = nullptr;  // [n_q][d]
  float* w = nullptr;         // [n_q][w_stride]
  float* corr = nullptr;      // [n_q]
  std::size_t w_stride = 0;

  void reserve(std::size_t n_q, std::size_t d, std::size_t max_k_tile, std::size_t max_v_tile) {
    const std::size_t pad = kernels::kSoftmaxPad;
    const std::size_t chunk = std::max(kChunkTokens, max_k_tile);
    w_stride = (max_v_tile + kValueBatchTokens + chunk + 2 * pad) / pad * pad;
    const std::size_t need = 2 * n_q * d + n_q * w_stride + n_q;
    if (buf.size() < need) buf.resize(need);
    if (valid.size() < n_q) valid.resize(n_q);
    q_work = buf.data();
    acc_work = q_work + n_q * d;
    w = acc_work + n_q * d;
    corr = w + n_q * w_stride;
  }
};

inline FusedWorkspace& thread_workspace() {
  thread_local FusedWorkspace ws;
  return ws;
}

// The run of `runs` holding position p (runs cover [0, n) in order).
inline std::size_t run_at(std::span<const TileRun> runs, std::size_t p, std::size_t from = 0) {
  std::size_t r = from;
  while (r < runs.size() && runs[r].end() <= p) ++r;
  return r;
}

// The smallest tile boundary of `runs` at or after p.
inline std::size_t tile_boundary_at_or_after(std::span<const TileRun> runs, std::size_t p) {
  const std::size_t r = run_at(runs, p);
  if (r == runs.size()) return p;
  const TileRun& run = runs[r];
  const std::size_t off = p > run.first ? p - run.first : 0;
  return run.first + (off + run.tile_tokens - 1) / run.tile_tokens * run.tile_tokens;
}

// A boundary >= p of the tiles of both streams (k and v), or `n` if none is
// found within a few steps (possible only with two different multi-token
// tilings that never line up).
inline std::size_t common_boundary(std::span<const TileRun> k, std::span<const TileRun> v, std::size_t p,
                                   std::size_t n) {
  for (int step = 0; step < 8 && p < n; ++step) {
    const std::size_t a = tile_boundary_at_or_after(k, p);
    const std::size_t b = tile_boundary_at_or_after(v, a);
    if (b == a) return std::min(a, n);
    p = b;
  }
  return n;
}

// Exact copies of some tokens that replace their stored forms (heavy
// hitters, heavy_hitters.hpp): scores at the `hidden` positions are masked
// (weight 0 in K and V), and the n exact tokens, at positions[i], are
// attended once more, by the range holding position 0.
struct Overlay {
  std::span<const std::uint32_t> hidden;  // ascending
  const AnyCodec* codec = nullptr;        // of both K and V tiles (one token each)
  RunKernels kk, vk;
  const std::byte* k_tiles = nullptr;
  const std::byte* v_tiles = nullptr;
  const std::uint32_t* positions = nullptr;
  std::size_t n = 0;
};

// Scores of rows [0, n_q) x [0, n) at `w` become scale * s.
inline void scale_rows(float* w, std::size_t stride, std::size_t n_q, std::size_t n, float scale) {
  for (std::size_t i = 0; i < n_q; ++i)
    for (float* row = w + i * stride; float& x : std::span<float>(row, n)) x *= scale;
}

// The same, and -inf where masked(i, t): the caller then runs the softmax
// with scale 1, so a masked weight is exactly 0 whatever the sign of scale.
template <class Masked>
void scale_and_mask(float* w, std::size_t stride, std::size_t n_q, std::size_t n, float scale, Masked&& masked) {
  for (std::size_t i = 0; i < n_q; ++i) {
    float* row = w + i * stride;
    for (std::size_t t = 0; t < n; ++t) row[t] = masked(i, t) ? -std::numeric_limits<float>::infinity() : row[t] * scale;
  }
}

// The pass over [begin, end) (common tile boundaries) for one query block.
// kk / vk: the resolved kernels of each run.
inline void attend_range(std::span<const TileRun> k_runs, std::span<const RunKernels> kk,
                         std::span<const TileRun> v_runs, std::span<const RunKernels> vk, std::size_t d,
                         const QueryBlock& qb, std::size_t begin, std::size_t end, FusedWorkspace& ws,
                         Partial out, const Overlay* overlay = nullptr) {
  const std::size_t n_q = qb.n_q;
  for (std::size_t i = 0; i < n_q; ++i) {
    out.m[i] = -std::numeric_limits<float>::infinity();
    out.l[i] = 0.0f;
  }
  std::fill(out.acc, out.acc + n_q * d, 0.0f);
  std::size_t stop = 0;  // positions from `stop` on are invisible to every query
  for (std::size_t i = 0; i < n_q; ++i) stop = std::max<std::size_t>(stop, qb.visible[i]);
  stop = std::min(stop, end);
  if (stop <= begin) return;

  const std::size_t ws_stride = ws.w_stride;
  float* const w = ws.w;
  std::size_t k_pos = begin, v_pos = begin;  // next K position to score; W column 0 is v_pos
  std::size_t kr = run_at(k_runs, begin), vr = run_at(v_runs, begin);
  const AnyCodec* prepared = nullptr;  // K codec that prepared q_work
  // The K codec whose prepared queries ws.q_int8 holds: model-space codecs
  // share them (prepare_query is the identity), turbo's are rotated.
  const AnyCodec* quantized = nullptr;
  bool quantized_model_space = false;
  const AnyCodec* working = nullptr;   // V codec accumulating in acc_work

  // Maps the working-space accumulator of V codec `working` into out.acc.
  const auto finish_working = [&] {
    if (working == nullptr) return;
    const AnyCodec& c = *working;
    float* tmp = ws.q_work;  // free while V is swept: q_work is re-prepared for the next K run
    prepared = nullptr;
    for (std::size_t i = 0; i < n_q; ++i) {
      c.finish_output(ws.acc_work + i * d, tmp);
      float* a = out.acc + i * d;
      for (std::size_t j = 0; j < d; ++j) a[j] += tmp[j];
    }
    working = nullptr;
  };

  // Accumulates the waiting weights of every whole V tile before `limit`;
  // with `final`, the V tile holding limit - 1 too (zero weights after it).
  const auto flush_v = [&](std::size_t limit, bool final) {
    while (v_pos < limit) {
      vr = run_at(v_runs, v_pos, vr);
      const TileRun& run = v_runs[vr];
      const std::size_t g = run.tile_tokens;
      std::size_t nt = (std::min(limit, run.end()) - v_pos) / g;
      if (nt == 0) {
        if (!final) return;
        const std::size_t have = limit - v_pos;  // pad the tile with zero weights
        for (std::size_t i = 0; i < n_q; ++i) std::fill(w + i * ws_stride + have, w + i * ws_stride + g, 0.0f);
        nt = 1;
      }
      float* acc = out.acc;
      if (!vk[vr].model_space) {
        if (working != run.codec) {
          finish_working();
          std::fill(ws.acc_work, ws.acc_work + n_q * d, 0.0f);
          working = run.codec;
        }
        acc = ws.acc_work;
      }
      const std::size_t tile0 = (v_pos - run.first) / g;
      vk[vr].accumulate(vk[vr].codec, w, n_q, ws_stride, run.tiles + tile0 * run.tile_bytes, nt, acc, d);
      const std::size_t used = nt * g, pending = k_pos > v_pos + used ? k_pos - v_pos - used : 0;
      if (pending > 0)
        for (std::size_t i = 0; i < n_q; ++i) std::memmove(w + i * ws_stride, w + i * ws_stride + used, pending * sizeof(float));
      v_pos += used;
    }
  };

  // What was accumulated so far follows a moved running max (ws.corr);
  // `col` weights wait in the buffer for their V tile.
  const auto rescale = [&](std::size_t col) {
    for (std::size_t i = 0; i < n_q; ++i) {
      const float c = ws.corr[i];
      if (c == 1.0f) continue;
      float* wi = w + i * ws_stride;
      for (std::size_t t = 0; t < col; ++t) wi[t] *= c;
      float* a = out.acc + i * d;
      for (std::size_t j = 0; j < d; ++j) a[j] *= c;
      if (working != nullptr) {
        float* aw = ws.acc_work + i * d;
        for (std::size_t j = 0; j < d; ++j) aw[j] *= c;
      }
    }
  };

  // The overlay's exact tokens, after every stored one (no weight waits).
  const auto attend_overlay = [&] {
    const Overlay& o = *overlay;
    for (std::size_t first = 0; first < o.n; first += kChunkTokens) {
      const std::size_t n = std::min(kChunkTokens, o.n - first);
      if (prepared != o.codec) {
        for (std::size_t i = 0; i < n_q; ++i) o.codec->prepare_query(qb.q[i], ws.q_work + i * d);
        prepared = o.codec;
      }
      const std::size_t bt = o.codec->bytes_per_tile();
      o.kk.scores(o.kk.codec, ws.q_work, n_q, d, o.k_tiles + first * bt, n, w, ws_stride);
      scale_and_mask(w, ws_stride, n_q, n, qb.scale,
                     [&](std::size_t i, std::size_t t) { return o.positions[first + t] >= qb.visible[i]; });
      kernels::online_softmax(w, n_q, ws_stride, n, nullptr, 1.0f, out.m, out.l, ws.corr);
      rescale(0);
      float* acc = out.acc;
      if (!o.vk.model_space) {
        if (working != o.codec) {
          finish_working();
          std::fill(ws.acc_work, ws.acc_work + n_q * d, 0.0f);
          working = o.codec;
        }
        acc = ws.acc_work;
      }
      o.vk.accumulate(o.vk.codec, w, n_q, ws_stride, o.v_tiles + first * bt, n, acc, d);
    }
  };

  const std::span<const std::uint32_t> hidden = overlay ? overlay->hidden : std::span<const std::uint32_t>{};
  std::size_t hid = 0;  // first hidden position not behind k_pos
  while (k_pos < stop) {
    kr = run_at(k_runs, k_pos, kr);
    const TileRun& run = k_runs[kr];
    const std::size_t g = run.tile_tokens, col = k_pos - v_pos;
    const bool int8 = kk[kr].scores_int8 != nullptr;
    const bool have_int8 =
        int8 && (quantized == run.codec || (quantized != nullptr && quantized_model_space && kk[kr].model_space));
    if (prepared != run.codec && !have_int8) {
      for (std::size_t i = 0; i < n_q; ++i) run.codec->prepare_query(qb.q[i], ws.q_work + i * d);
      prepared = run.codec;
    }
    if (int8 && !have_int8) {
      kernels::quantize_queries(ws.q_work, n_q, d, d, ws.q_int8);  // once per block, range and working space
      quantized = run.codec;
      quantized_model_space = kk[kr].model_space;
    }
    // A chunk of up to kChunkTokens continues into the next runs (pages) of
    // the same codec: chunks, and so the softmax steps, do not depend on
    // where pages end.
    const std::size_t max_tiles = std::max<std::size_t>(1, kChunkTokens / g);
    std::size_t nt = 0, pos = k_pos;
    for (std::size_t r = kr; nt < max_tiles && pos < stop && r < k_runs.size() && k_runs[r].codec == run.codec; ++r) {
      const TileRun& piece = k_runs[r];
      const std::size_t tile0 = (pos - piece.first) / g;
      const std::size_t m = std::min((std::min(stop, piece.end()) - pos + g - 1) / g, max_tiles - nt);
      const std::byte* tiles = piece.tiles + tile0 * piece.tile_bytes;
      if (int8)
        kk[r].scores_int8(kk[r].codec, ws.q_int8, tiles, m, w + col + nt * g, ws_stride);
      else
        kk[r].scores(kk[r].codec, ws.q_work, n_q, d, tiles, m, w + col + nt * g, ws_stride);
      nt += m;
      pos += m * g;
      if (pos < piece.end()) break;
    }
    const std::size_t n = nt * g;
    for (std::size_t i = 0; i < n_q; ++i)
      ws.valid[i] = static_cast<std::uint32_t>(qb.visible[i] > k_pos ? std::min(qb.visible[i] - k_pos, n) : 0);
    float softmax_scale = qb.scale;
    while (hid < hidden.size() && hidden[hid] < k_pos) ++hid;
    if (hid < hidden.size() && hidden[hid] < k_pos + n) {  // heavy hitters' stored forms
      std::size_t last = hid;
      while (last < hidden.size() && hidden[last] < k_pos + n) ++last;
      scale_rows(w + col, ws_stride, n_q, n, qb.scale);  // then softmax scale 1: see scale_and_mask
      for (std::size_t i = 0; i < n_q; ++i)
        for (std::size_t h = hid; h < last; ++h)
          w[i * ws_stride + col + (hidden[h] - k_pos)] = -std::numeric_limits<float>::infinity();
      softmax_scale = 1.0f;
    }
    kernels::online_softmax(w + col, n_q, ws_stride, n, ws.valid.data(), softmax_scale, out.m, out.l, ws.corr);
    rescale(col);
    k_pos += n;
    vr = run_at(v_runs, v_pos, vr);
    if (vr == v_runs.size() || !vk[vr].tile_products || k_pos - v_pos >= kValueBatchTokens) flush_v(k_pos, false);
  }
  flush_v(std::min(k_pos, stop), true);
  if (overlay != nullptr && begin == 0) attend_overlay();
  finish_working();
}

// Combines partials of consecutive ranges into the first (log-sum-exp).
inline void merge_partials(Partial into, const Partial& other, std::size_t n_q, std::size_t d) {
  for (std::size_t i = 0; i < n_q; ++i) {
    const float m = std::max(into.m[i], other.m[i]);
    if (m == -std::numeric_limits<float>::infinity()) continue;
    const float a = into.m[i] == m ? 1.0f : std::exp(into.m[i] - m);
    const float b = other.m[i] == m ? 1.0f : std::exp(other.m[i] - m);
    into.l[i] = into.l[i] * a + other.l[i] * b;
    float* x = into.acc + i * d;
    const float* y = other.acc + i * d;
    for (std::size_t j = 0; j < d; ++j) x[j] = x[j] * a + y[j] * b;
    into.m[i] = m;
  }
}

}  // namespace kvq::detail

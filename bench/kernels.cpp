// Kernel microbenchmarks: scores and accumulate of every codec with SIMD
// kernels (uniform, turbo, per-channel) at head_dim 128, 4K and 32K tokens,
// GQA groups of 1, 4 and 8, single thread, plus 1 vs 2 threads for a long run. Decode attention is memory bound, so every
// benchmark reports the bytes of compressed cache it reads per second and
// that as a fraction of the machine's measured single-core read bandwidth
// (bench/bandwidth.cpp).
//
// "hot" reads the same run every iteration: a 32K-token run of q4_0 is 2.3 MB,
// which sits in L2/L3, so hot figures can exceed DRAM bandwidth. "cold"
// cycles through copies of the run filling 256 MiB, so every iteration reads
// from DRAM, as decoding with a real model (all layers' caches) does. The
// fraction of bandwidth is only meaningful for cold runs.
//
// "scores_int8" (the uniform and turbo formats) scores int8-quantized queries
// (kernels::quantize_queries once, outside the timed loop, as attend does
// once per step; per-channel tiles: kernels::scores_int8, which quantizes the
// folded query per tile inside), "scores" f32 queries: the same rows, so their ratio is the
// int8 path's speedup. "accumulate_bf16" and "accumulate_int8" (q4_0, q4_1,
// q3_1, q2_1) are kernels::accumulate_bf16 / accumulate_int8 beside
// "accumulate" (f32) in the same way.
#include <kvq/kernels/parallel.hpp>  // kvq before anything that includes Highway

#include "bandwidth.hpp"

#include <kvq/codec/per_channel.hpp>
#include <kvq/codec/turbo.hpp>
#include <kvq/codec/uniform.hpp>
#include <kvq/core/aligned_buffer.hpp>
#include <kvq/core/rng.hpp>

#include <benchmark/benchmark.h>
#include <hwy/targets.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kHeadDim = 128;
constexpr std::size_t kColdBytes = std::size_t{256} << 20;

enum class Op { scores, scores_int8, accumulate, accumulate_bf16, accumulate_int8 };

const char* op_name(Op op) {
  return op == Op::scores ? "scores" : op == Op::scores_int8 ? "scores_int8" : op == Op::accumulate ? "accumulate"
         : op == Op::accumulate_bf16 ? "accumulate_bf16" : "accumulate_int8";
}

// A run of n tokens (n / G tiles of G tokens; G = 1 for row codecs), encoded
// from Gaussian data, replicated to fill kColdBytes when cold.
template <class Codec>
struct Cache {
  // Google Benchmark calls a benchmark function several times (iteration
  // estimate, repetitions); consecutive benchmarks of one codec, length and
  // temperature share the last cache built instead of re-filling 256 MiB.
  static const Cache& get(std::size_t n, bool cold) {
    static std::unique_ptr<Cache> last;
    if (!last || last->n != n || last->cold != cold) {
      last.reset();
      last = std::make_unique<Cache>(Codec(kHeadDim), n, cold);
    }
    return *last;
  }
  Cache(const Codec& c, std::size_t n, bool cold)
      : n(n), tiles(n / c.tokens_per_tile()), run_bytes(tiles * c.bytes_per_tile()), cold(cold) {
    copies = cold ? (kColdBytes + run_bytes - 1) / run_bytes : 1;
    bytes.resize(copies * run_bytes);
    kvq::Rng rng(7);
    std::vector<float> x(c.tokens_per_tile() * c.head_dim());
    for (std::size_t t = 0; t < tiles; ++t) {
      for (auto& v : x) v = static_cast<float>(rng.normal());
      c.encode_tile(x.data(), bytes.data() + t * c.bytes_per_tile());
    }
    for (std::size_t i = 1; i < copies; ++i) std::memcpy(bytes.data() + i * run_bytes, bytes.data(), run_bytes);
  }
  const std::byte* run(std::size_t i) const { return bytes.data() + (i % copies) * run_bytes; }
  std::size_t n, tiles, run_bytes, copies;
  bool cold;
  kvq::AlignedBuffer<std::byte> bytes;
};

void set_counters(benchmark::State& state, std::size_t n, std::size_t run_bytes) {
  const double iters = static_cast<double>(state.iterations());
  state.counters["rows/s"] = benchmark::Counter(iters * static_cast<double>(n), benchmark::Counter::kIsRate);
  state.counters["bytes/s"] = benchmark::Counter(iters * static_cast<double>(run_bytes),
                                                 benchmark::Counter::kIsRate);
  state.counters["frac_bw"] = benchmark::Counter(
      iters * static_cast<double>(run_bytes) / kvq::bench::read_bandwidth(), benchmark::Counter::kIsRate);
}

template <class Codec>
void BM_Kernel(benchmark::State& state, Op op, bool cold) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const std::size_t n_q = static_cast<std::size_t>(state.range(1));
  const Codec c(kHeadDim);
  const Cache<Codec>& cache = Cache<Codec>::get(n, cold);
  kvq::Rng rng(11);
  std::vector<float> q(n_q * kHeadDim), out(n_q * n), w(n_q * n), acc(n_q * kHeadDim, 0.0f);
  for (auto& v : q) v = static_cast<float>(rng.normal());
  for (auto& v : w) v = static_cast<float>(rng.uniform()) / static_cast<float>(n);
  kvq::kernels::Int8Queries qq;
  if constexpr (kvq::kernels::kHasInt8Scores<Codec>) kvq::kernels::quantize_queries(q.data(), n_q, kHeadDim, kHeadDim, qq);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::byte* rows = cache.run(i++);
    if (op == Op::scores)
      kvq::kernels::scores(c, q.data(), n_q, kHeadDim, rows, cache.tiles, out.data(), n);
    else if (op == Op::scores_int8) {
      if constexpr (kvq::kernels::kHasInt8Scores<Codec>) kvq::kernels::scores(c, qq, rows, cache.tiles, out.data(), n);
      if constexpr (kvq::kernels::kHasTileInt8Scores<Codec>)
        kvq::kernels::scores_int8(c, q.data(), n_q, kHeadDim, rows, cache.tiles, out.data(), n);
    } else if (op == Op::accumulate_bf16) {
      if constexpr (kvq::kernels::kHasBf16Accumulate<Codec>)
        kvq::kernels::accumulate_bf16(c, w.data(), n_q, n, rows, cache.tiles, acc.data(), kHeadDim);
    } else if (op == Op::accumulate_int8) {
      if constexpr (kvq::kernels::kHasInt8Accumulate<Codec>)
        kvq::kernels::accumulate_int8(c, w.data(), n_q, n, rows, cache.tiles, acc.data(), kHeadDim);
    } else
      kvq::kernels::accumulate(c, w.data(), n_q, n, rows, cache.tiles, acc.data(), kHeadDim);
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(acc.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, cache.run_bytes);
  state.SetLabel(kvq::kernels::target_name());
}

// The same through kvq::kernels::ThreadPool with state.range(2) threads,
// timed in wall-clock time (CPU time would only count the calling thread).
template <class Codec>
void BM_Threads(benchmark::State& state, Op op) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const std::size_t n_q = static_cast<std::size_t>(state.range(1));
  const std::size_t threads = static_cast<std::size_t>(state.range(2));
  const Codec c(kHeadDim);
  const Cache<Codec>& cache = Cache<Codec>::get(n, true);
  kvq::kernels::ThreadPool pool(threads);
  kvq::Rng rng(11);
  std::vector<float> q(n_q * kHeadDim), out(n_q * n), w(n_q * n), acc(n_q * kHeadDim, 0.0f);
  for (auto& v : q) v = static_cast<float>(rng.normal());
  for (auto& v : w) v = static_cast<float>(rng.uniform()) / static_cast<float>(n);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::byte* rows = cache.run(i++);
    if (op == Op::scores)
      kvq::kernels::scores_parallel(c, q.data(), n_q, kHeadDim, rows, cache.tiles, out.data(), n, threads, pool);
    else
      kvq::kernels::accumulate_parallel(c, w.data(), n_q, n, rows, cache.tiles, acc.data(), kHeadDim, threads,
                                        pool);
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(acc.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, cache.run_bytes);
  state.SetLabel(kvq::kernels::target_name());
}

// Encoding throughput (what append costs per token once a tile is complete):
// tiles of Gaussian data encoded one after another into a 4K-token buffer.
template <class Codec>
void BM_Encode(benchmark::State& state) {
  const Codec c(kHeadDim);
  const std::size_t g = c.tokens_per_tile(), tiles = 4096 / g;
  kvq::Rng rng(5);
  std::vector<float> x(tiles * g * kHeadDim);
  for (auto& v : x) v = static_cast<float>(rng.normal());
  std::vector<std::byte> out(tiles * c.bytes_per_tile());
  for (auto _ : state) {
    for (std::size_t t = 0; t < tiles; ++t)
      c.encode_tile(x.data() + t * g * kHeadDim, out.data() + t * c.bytes_per_tile());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations() * tiles * g),
                                                  benchmark::Counter::kIsRate);
  state.counters["input_bytes/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * x.size() * sizeof(float)), benchmark::Counter::kIsRate);
}

// Building a turbo codec (what an engine pays once per codec object): the
// rotation (a dense QR at head_dims that are not powers of two; nothing else
// holds that (dim, seed) here, so every iteration builds it) and the codebook.
void BM_TurboConstruct(benchmark::State& state) {
  const std::size_t d = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    const kvq::Turbo4 c(d);
    benchmark::DoNotOptimize(&c);
  }
}

void BM_ReadBandwidth(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(kvq::bench::read_bandwidth());
  state.counters["GB/s"] = kvq::bench::read_bandwidth() / 1e9;
  state.SetLabel(kvq::bench::read_bandwidth_target());
}

// Min and max over repetitions next to Google Benchmark's mean/median: on a
// shared machine the best repetition is the one least disturbed.
benchmark::internal::Benchmark* with_stats(benchmark::internal::Benchmark* b) {
  return b
      ->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); })
      ->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
}

template <class Codec>
void register_codec() {
  const std::string name(Codec::name);
  for (const bool cold : {false, true})
    for (const int tokens : {4096, 32768})
      for (const Op op : {Op::scores, Op::scores_int8, Op::accumulate, Op::accumulate_bf16, Op::accumulate_int8}) {
        if (op == Op::scores_int8 && !kvq::kernels::kHasInt8Scores<Codec> && !kvq::kernels::kHasTileInt8Scores<Codec>)
          continue;
        if (op == Op::accumulate_bf16 && !kvq::kernels::kHasBf16Accumulate<Codec>) continue;
        if (op == Op::accumulate_int8 && !kvq::kernels::kHasInt8Accumulate<Codec>) continue;
        const std::string bm = name + "/" + op_name(op) + "/" + (cold ? "cold" : "hot");
        const std::vector<long> gqa = std::vector<long>{1, 4, 8};
        with_stats(benchmark::RegisterBenchmark(bm.c_str(), BM_Kernel<Codec>, op, cold)
                       ->ArgNames({"tokens", "gqa"})
                       ->ArgsProduct({{tokens}, gqa}));
      }
}

template <class Codec>
void register_encode() {
  with_stats(benchmark::RegisterBenchmark((std::string(Codec::name) + "/encode").c_str(), BM_Encode<Codec>));
}

template <class Codec>
void register_threads() {
  const std::string name(Codec::name);
  for (const Op op : {Op::scores, Op::accumulate}) {
    const std::string bm = name + "/" + op_name(op) + "/cold/mt";
    with_stats(benchmark::RegisterBenchmark(bm.c_str(), BM_Threads<Codec>, op)
                   ->ArgNames({"tokens", "gqa", "threads"})
                   ->ArgsProduct({{32768}, {1, 4}, {1, 2}})
                   ->UseRealTime());
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::RegisterBenchmark("read_bandwidth", BM_ReadBandwidth)->Iterations(1);
  register_codec<kvq::Q8_0>();
  register_codec<kvq::Q4_0>();
  register_codec<kvq::Q4_1>();
  register_codec<kvq::Q3_1>();
  register_codec<kvq::Q2_1>();
  register_codec<kvq::Turbo4>();
  register_codec<kvq::Turbo3>();
  register_codec<kvq::Turbo2>();
  register_codec<kvq::PerChannel<4>>();
  register_codec<kvq::PerChannel<3>>();
  register_codec<kvq::PerChannel<2>>();
  register_encode<kvq::Q8_0>();
  register_encode<kvq::Q4_0>();
  register_encode<kvq::Q4_1>();
  register_encode<kvq::Q3_1>();
  register_encode<kvq::Q2_1>();
  register_encode<kvq::Turbo4>();
  register_encode<kvq::Turbo3>();
  register_encode<kvq::Turbo2>();
  register_encode<kvq::PerChannel<4>>();
  register_encode<kvq::PerChannel<3>>();
  register_encode<kvq::PerChannel<2>>();
  register_threads<kvq::Q8_0>();
  register_threads<kvq::Q4_0>();
  register_threads<kvq::Turbo4>();
  register_threads<kvq::PerChannel<4>>();
  with_stats(benchmark::RegisterBenchmark("turbo4/construct", BM_TurboConstruct)
                 ->ArgNames({"head_dim"})
                 ->ArgsProduct({{80, 96, 128, 640, 1008}})
                 ->Unit(benchmark::kMillisecond));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // KVQ_BENCH_TARGET=AVX2 (a Highway target name): that target's kernels, to
  // measure a narrower CPU's code paths on this one.
  if (const char* want = std::getenv("KVQ_BENCH_TARGET")) {
    const std::int64_t runnable = kvq::kernels::compiled_targets() & hwy::SupportedTargets();
    std::int64_t chosen = 0;
    for (std::int64_t left = runnable; left != 0; left &= left - 1)
      if (std::string(hwy::TargetName(left & -left)) == want) chosen = left & -left;
    if (chosen == 0) {
      std::fprintf(stderr, "KVQ_BENCH_TARGET=%s: not a target this build and CPU run\n", want);
      return 1;
    }
    hwy::SetSupportedTargetsForTest(chosen);
  }
  benchmark::AddCustomContext("kvq_target", kvq::kernels::target_name());
  benchmark::AddCustomContext("read_bandwidth_GBps", std::to_string(kvq::bench::read_bandwidth() / 1e9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// kvq demo: a compressed K/V cache driven the way an engine drives it.
//
// For each configuration a kvq::Cache is filled as an engine's decode loop
// fills it -- the prompt's K/V appended in one batch per layer (prefill), then
// one token per layer and step (append, attend) -- on the real post-RoPE
// Q/K/V of the wt2-byte-a model (../shared/data/kv-dumps/wt2-byte-a), or on
// synthetic data with the statistics of real K when the dumps are absent. It
// prints what the configuration costs (memory here and projected to a 3B model
// at 32K/128K), what it does to attention (against exact attention computed
// independently in double precision) and how fast a decode step is (against
// this machine's read bandwidth, measured by the same process).
//
//   kvq_demo [--data DIR | --synthetic] [--quick] [--max-q8-error X] [SPEC ...]
//
// Exits 1 if a result is wrong: an exact configuration (f16/f32 storage of
// fp16 data) off by more than float rounding, q8_0 off by more than
// --max-q8-error (default 0.03; docs/CACHE.md measures ~0.01), or a window
// making q4_0 worse.
#include <kvq/kvq.hpp>  // before anything else that includes Highway

#include "bandwidth.hpp"  // bench/: the read-bandwidth probe the benchmarks use
#include "demo_data.hpp"  // the real Q/K/V dumps, or their synthetic stand-in

#include <Eigen/Dense>

#include <time.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>  // _mm_clflush, _mm_mfence (SSE2: every x86-64)
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using kvq_demo::Activations;

// The configurations a newcomer meets first: exact, 8-bit, 4-bit flat and
// with a recent window + attention sinks, the rotated (turbo) and
// per-channel-K codecs, and 2 bits, which needs a wide window to be usable.
//
// Beside each, what it costs a real model, measured offline (minutes, not a
// demo's seconds): wt2-byte-a's NLL in nats/byte over the first three 4096-byte
// windows of WikiText-2 test with its K/V held in a kvq::Cache of the spec,
//   build/examples/llama/kvq-ppl --spec SPEC --windows 3 --readout decoded
// (exact attention: 1.033824; differences under 0.0005 are noise, docs/QUALITY.md).
struct Config {
  const char* spec;
  double nll;
};
constexpr double kExactNll = 1.033824;
constexpr Config kDefaultConfigs[] = {
    {"k=f16,v=f16", 1.033823},
    {"k=q8_0,v=q8_0", 1.033843},
    {"k=q4_0,v=q4_0", 1.040456},
    {"k=q4_0,v=q4_0,window=128,sinks=4", 1.035177},
    {"k=turbo4,v=turbo4,window=128,sinks=4", 1.033621},
    {"k=pc4,v=q4_1,window=128,sinks=4", 1.034073},
    {"k=turbo3,v=turbo3,window=128,sinks=4", 1.034510},
    {"k=q2_1,v=q2_1,window=512,sinks=4", 1.043154},
};

// Perplexity change of the real model with `spec`, "-" where not measured.
std::string perplexity_change(const kvq::CacheSpec& spec) {
  for (const Config& c : kDefaultConfigs)
    if (kvq::CacheSpec::parse(c.spec) == spec) {
      char text[16];
      // Rounded first, so a change below the printed digits reads +0.00%, not -0.00%.
      std::snprintf(text, sizeof text, "%+.2f%%", std::round(1e4 * std::expm1(c.nll - kExactNll)) / 100.0 + 0.0);
      return text;
    }
  return "-";
}

// The shape `kvq plan --model llama-3.2-3b` prices: 28 layers, 24 query and
// 8 KV heads, head_dim 128.
const kvq::ModelShape kProjectedShape = kvq::ModelShape::dense(28, 24, 8, 128, 131072);
constexpr const char* kProjectedName = "Llama-3.2-3B";

// Exact attention of the decode steps, in double, straight from the
// activations (no kvq code involved): per step, layer and query head the
// output vector and the most-attended position.
struct Reference {
  std::vector<Eigen::VectorXd> out;  // [step][layer][q_head]
  std::vector<Eigen::Index> top;
};

Reference exact_attention(const Activations& a, std::size_t first_step) {
  const std::size_t L = a.shape.n_layers, HQ = a.shape.n_q_heads, HK = a.shape.n_kv_heads, D = a.shape.head_dim;
  const std::size_t T = a.tokens, G = HQ / HK;
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Reference ref;
  ref.out.resize((T - first_step) * L * HQ);
  ref.top.resize(ref.out.size());
  for (std::size_t l = 0; l < L; ++l)
    for (std::size_t g = 0; g < HK; ++g) {
      // The KV head's keys and values as T x D double matrices.
      const Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>> kf(a.k_at(l, 0) + g * D, T, D,
                                                                    Eigen::OuterStride<>(a.kv_stride()));
      const Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>> vf(a.v_at(l, 0) + g * D, T, D,
                                                                    Eigen::OuterStride<>(a.kv_stride()));
      const Eigen::MatrixXd K = kf.cast<double>(), V = vf.cast<double>();
      for (std::size_t p = first_step; p < T; ++p)
        for (std::size_t h = g * G; h < (g + 1) * G; ++h) {
          const Eigen::VectorXd q = Eigen::Map<const Eigen::VectorXf>(a.q_at(l, p) + h * D, D).cast<double>();
          const Eigen::Index n = static_cast<Eigen::Index>(p + 1);
          Eigen::VectorXd s = K.topRows(n) * q / std::sqrt(double(D));
          const std::size_t i = ((p - first_step) * L + l) * HQ + h;
          s.maxCoeff(&ref.top[i]);
          const Eigen::VectorXd w = (s.array() - s.maxCoeff()).exp();
          ref.out[i] = V.topRows(n).transpose() * w / w.sum();
        }
    }
  return ref;
}

double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Whether evict() can flush: x86-64 (clflush) and Linux on AArch64 (which lets
// user code run `dc civac`).
#if defined(__x86_64__) || defined(_M_X64) || (defined(__aarch64__) && defined(__linux__))
#define KVQ_DEMO_FLUSHES 1
constexpr bool kStepsCold = true;
#else
constexpr bool kStepsCold = false;
#endif

// Writes the cache's bytes back and drops them from every CPU cache level, so
// the next step reads them from DRAM, as in an engine, where the model's
// weights and its other layers evict a layer's K/V between two steps. A no-op
// where kStepsCold is false (the steps are then timed warm, and said to be).
void evict(const kvq::Cache& cache) {
#ifdef KVQ_DEMO_FLUSHES
  const kvq::ModelShape& s = cache.shape();
  for (std::size_t l = 0; l < s.n_layers; ++l)
    for (kvq::StreamKind kind : {kvq::StreamKind::key, kvq::StreamKind::value})
      for (std::size_t h = 0; h < s.n_kv_heads; ++h)
        for (const kvq::SegmentView& seg : cache.segments(l, kind, h))
          for (std::size_t i = 0; i < seg.bytes.size(); i += 64) {
            const void* line = seg.bytes.data() + i;
#if defined(__aarch64__)
            asm volatile("dc civac, %0" : : "r"(line) : "memory");
#else
            _mm_clflush(line);
#endif
          }
#if defined(__aarch64__)
  asm volatile("dsb ish" : : : "memory");
#else
  _mm_mfence();
#endif
#else
  (void)cache;
#endif
}

struct Row {
  kvq::CacheSpec spec;
  double bits = 0, bytes_here = 0, bytes_32k = 0, bytes_128k = 0;
  double error = 0, top1 = 0;
  double step_seconds = 0, bandwidth_fraction = 0;
};

struct Run {
  std::size_t prompt = 0;      // tokens appended by the prefill
  std::size_t samples = 15;    // timed decode steps
  double bandwidth = 0;        // bytes/s
};

// Bytes a cache of `spec` holds for the projected model at `context` tokens;
// NaN for a spec written for the demo's 8 layers that does not fit its 28
// (a layers= table).
double projected_bytes(const kvq::CacheSpec& spec, std::size_t context) {
  try {
    return double(kvq::plan_memory(kProjectedShape, spec, context).total.total_bytes());
  } catch (const kvq::Error&) {
    return std::nan("");
  }
}

Row run_configuration(const Activations& a, const Reference& ref, const Run& run, const kvq::CacheSpec& spec) {
  const std::size_t L = a.shape.n_layers, HQ = a.shape.n_q_heads, D = a.shape.head_dim, T = a.tokens;
  Row row;
  row.spec = spec;
  kvq::Cache cache(a.shape, row.spec);

  // Prefill: the dump already holds the model's K/V for the prompt, so the
  // engine's part that matters here is one batch append per layer.
  for (std::size_t l = 0; l < L; ++l) cache.append(l, run.prompt, a.k_at(l, 0), a.v_at(l, 0));

  // Decode steps: per layer, append the new token's K/V, attend with its query.
  std::vector<float> out(HQ * D), scores(T);
  double err2 = 0, ref2 = 0;
  std::size_t same_top = 0, n_top = 0;
  for (std::size_t p = run.prompt; p < T; ++p)
    for (std::size_t l = 0; l < L; ++l) {
      cache.append(l, a.k_at(l, p), a.v_at(l, p));
      cache.attend(l, a.q_at(l, p), out.data());
      for (std::size_t h = 0; h < HQ; ++h) {
        const std::size_t i = ((p - run.prompt) * L + l) * HQ + h;
        const Eigen::VectorXd o = Eigen::Map<const Eigen::VectorXf>(&out[h * D], D).cast<double>();
        err2 += (o - ref.out[i]).squaredNorm();
        ref2 += ref.out[i].squaredNorm();
        cache.scores(l, h, a.q_at(l, p) + h * D, scores.data());
        same_top += std::max_element(scores.begin(), scores.begin() + p + 1) - scores.begin() == ref.top[i];
        ++n_top;
      }
    }
  row.error = std::sqrt(err2 / ref2);
  row.top1 = double(same_top) / double(n_top);

  const kvq::MemoryUse held = cache.memory().total;
  row.bits = held.bits_per_value();
  row.bytes_here = double(held.total_bytes());
  row.bytes_32k = projected_bytes(row.spec, 32768);
  row.bytes_128k = projected_bytes(row.spec, 131072);

  // Decode-step time: the newest token's attention on every layer, repeated.
  std::vector<double> t(run.samples);
  for (auto& s : t) {
    evict(cache);
    const double t0 = thread_seconds();
    for (std::size_t l = 0; l < L; ++l) cache.attend(l, a.q_at(l, T - 1), out.data());
    s = thread_seconds() - t0;
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  row.step_seconds = t[t.size() / 2];
  row.bandwidth_fraction = double(held.compressed_bytes + held.exact_bytes) / row.step_seconds / run.bandwidth;
  return row;
}

// Whether every token of `spec` is stored in codecs `pred` accepts (the
// window and sinks are exact, so they never make a result worse).
template <class Pred>
bool stored_only_in(const kvq::CacheSpec& s, Pred pred) {
  return pred(s.codecs.k) && pred(s.codecs.v) && s.tiers.empty() && s.layers.empty() &&
         s.boundary.first + s.boundary.last == 0;
}
bool exact_storage(const kvq::CacheSpec& s) {
  return stored_only_in(s, [](const std::string& c) { return c == "f16" || c == "f32"; });
}
bool q8_0_storage(const kvq::CacheSpec& s) {
  return stored_only_in(s, [](const std::string& c) { return c == "q8_0"; });
}

int usage() {
  std::fprintf(stderr, "usage: kvq_demo [--data DIR | --synthetic] [--quick] [--max-q8-error X] [SPEC ...]\n");
  return 2;
}

// The dumps' directory: KVQ_SHARED_DIR from the environment, else the one the
// build names (../shared beside the project), as the tests and tools find it.
std::filesystem::path default_data_dir() {
  if (const char* env = std::getenv("KVQ_SHARED_DIR")) return std::filesystem::path(env) / "data/kv-dumps/wt2-byte-a";
#ifdef KVQ_SHARED_DIR
  return std::filesystem::path(KVQ_SHARED_DIR) / "data/kv-dumps/wt2-byte-a";
#else
  return "../shared/data/kv-dumps/wt2-byte-a";
#endif
}

}  // namespace

int main(int argc, char** argv) try {
  std::filesystem::path data_dir = default_data_dir();
  bool data_given = false, synthetic = false, quick = false;
  double max_q8_error = 0.03;
  std::vector<std::string> specs;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--data" && i + 1 < argc) data_dir = argv[++i], data_given = true;
    else if (arg == "--synthetic") synthetic = true;
    else if (arg == "--quick") quick = true;
    else if (arg == "--max-q8-error" && i + 1 < argc) {
      char* end = nullptr;
      max_q8_error = std::strtod(argv[++i], &end);
      if (*argv[i] == '\0' || *end != '\0' || !(max_q8_error >= 0)) return usage();
    }
    else if (arg.rfind("--", 0) == 0) return usage();
    else specs.push_back(arg);
  }
  if (specs.empty())
    for (const Config& c : kDefaultConfigs) specs.push_back(c.spec);
  const bool have_dumps = std::filesystem::exists(data_dir / "k.npy");
  if (data_given && !have_dumps) {
    std::fprintf(stderr, "kvq_demo: no k.npy in %s\n", data_dir.string().c_str());
    return 1;
  }

  // The demo's context: the whole 4096-token dump, or 1024 tokens in --quick.
  const std::size_t context = quick ? 1024 : 4096, steps = quick ? 8 : 64;
  const std::string why_synthetic = synthetic ? "--synthetic" : data_dir.string() + " not found";
  const Activations a = have_dumps && !synthetic ? kvq_demo::real_activations(data_dir, context)
                                                 : kvq_demo::synthetic_activations(context, why_synthetic);
  Run run;
  run.prompt = a.tokens - steps;
  run.samples = quick ? 3 : 15;
  // Every spec is checked against the data's shape before anything is printed
  // or measured: a bad one is one line on stderr.
  std::vector<kvq::CacheSpec> parsed;
  for (const auto& text : specs) {
    parsed.push_back(kvq::CacheSpec::parse(text));
    kvq::Cache check(a.shape, parsed.back());
  }
  run.bandwidth = kvq::bench::read_bandwidth();
  const Reference ref = exact_attention(a, run.prompt);

  const kvq::ModelShape& s = a.shape;
  std::printf("kvq %s demo: a kvq::Cache driven like an engine's decode loop (%s kernels, 1 thread)\n",
              KVQ_VERSION_STRING, kvq::kernels::target_name());
  std::printf("data:  %s\n       %zu layers, %zu query / %zu KV heads, head_dim %zu\n", a.source.c_str(), s.n_layers,
              s.n_q_heads, s.n_kv_heads, s.head_dim);
  std::printf("run:   prefill %zu tokens per layer, then %zu decode steps (append, attend) to %zu tokens\n",
              run.prompt, steps, a.tokens);
  std::printf("time:  %zu timed decode steps per configuration, %s\n", run.samples,
              kStepsCold ? "the cache flushed from the CPU caches before each (DRAM reads)"
                         : "the cache warm (no flush on this CPU)");
  std::printf("read bandwidth of this machine, 1 thread: %.1f GB/s\n\n", run.bandwidth / 1e9);
  const char* const row_format = "%-38s %6s %6s %6s %7s %7s %6s %7s %5s %7s\n";
  std::printf(row_format, "configuration", "bits/", "MiB", "GiB at", "GiB at", "error", "top-1", "step", "of", "ppl");
  std::printf(row_format, "", "value", "here", "32K", "128K", "", "same", "ms", "bw", "change");

  int status = 0;
  std::vector<Row> rows;
  for (const auto& spec : parsed) {
    rows.push_back(run_configuration(a, ref, run, spec));
    const Row& r = rows.back();
    auto fmt = [](const char* f, double x) {
      if (!std::isfinite(x)) return std::string("-");
      char text[32];
      std::snprintf(text, sizeof text, f, x);
      return std::string(text);
    };
    std::printf(row_format, r.spec.to_string().c_str(), fmt("%.2f", r.bits).c_str(),
                fmt("%.2f", r.bytes_here / 1048576.0).c_str(), fmt("%.2f", r.bytes_32k / 1073741824.0).c_str(),
                fmt("%.2f", r.bytes_128k / 1073741824.0).c_str(), fmt("%.2f%%", 100.0 * r.error).c_str(),
                fmt("%.1f%%", 100.0 * r.top1).c_str(), fmt("%.3f", 1e3 * r.step_seconds).c_str(),
                fmt("%.2f", r.bandwidth_fraction).c_str(), perplexity_change(r.spec).c_str());
    std::fflush(stdout);
  }
  std::printf("\nerror: attention output vs exact attention (double precision, same Q/K/V); top-1: most-attended"
              " token unchanged; ppl: the real model's perplexity change, measured offline by kvq-ppl (README)\n");
  std::printf("MiB: this cache now; GiB: the spec for %s; step: median time to attend one new token on all %zu"
              " layers; of bw: share of bandwidth it uses\n", kProjectedName, s.n_layers);

  // Wrong results fail the run (the ctest relies on it).
  const Row* q4_flat = nullptr;
  for (const Row& r : rows) {
    const std::string text = r.spec.to_string();
    auto fail = [&](const char* what, double bound) {
      std::fprintf(stderr, "kvq_demo: %s: error %.3g %s %.3g\n", text.c_str(), r.error, what, bound);
      status = 1;
    };
    if (!std::isfinite(r.error)) fail("is not finite, bound", 0.0);
    if (exact_storage(r.spec) && !(r.error <= 1e-5)) fail("exceeds float rounding", 1e-5);
    if (q8_0_storage(r.spec) && !(r.error <= max_q8_error))
      fail("exceeds the q8_0 bound", max_q8_error);
    if (text == "k=q4_0,v=q4_0") q4_flat = &r;
    if (q4_flat && text.rfind("k=q4_0,v=q4_0,window=", 0) == 0 && !(r.error < q4_flat->error))
      fail("with a window is not below flat q4_0's", q4_flat->error);
  }
  return status;
} catch (const std::exception& e) {  // kvq::Error (a bad spec, a corrupt dump) or a bad number
  std::fprintf(stderr, "kvq_demo: %s\n", e.what());
  return 1;
}

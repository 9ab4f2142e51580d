// The append-latency benchmark (issue 15): a decode loop's cache appends, one
// token per layer per step, timed step by step up to a long context, on the
// Llama-3.2-3B shape (28 layers, 24 query / 8 KV heads, head_dim 128). A
// cache that grows by reallocating stalls a step now and then to copy what it
// holds; paged storage must not: target worst step <= 3x the median.
//
// Prints, per spec: median, mean, p99, p99.9 and worst step, worst / median,
// which step was the worst and its minor page faults, the faults of all steps,
// and the payload and capacity held at the end, in wall and thread CPU time and
// as the per-step minimum of the CPU times of two identical runs (costs of
// kvq's own recur at their step; the host's interruptions do not); then the same in a CachePool
// whose pages were preallocated (CachePool::preallocate: allocated and touched
// up front, so no step allocates or faults memory in). Then the fork: a CachePool
// sequence of the same shape at the full length forked (median of 15 forks,
// each destroyed again), the bytes a fork adds to the pool, beside a full
// copy of the same cache (Cache's copy constructor).
//
// Usage: kvq_bench_append [--tokens 32768] [--spec SPEC ...] [--no-fork]
#include <kvq/kvq.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <sys/resource.h>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// This thread's CPU time (user + system, page faults included): on a loaded
// machine the wall time of a step also holds other processes' time slices.
double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

std::string load() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// Minor page faults of this thread so far (first touches of fresh memory).
long minor_faults() {
  rusage r{};
  getrusage(RUSAGE_THREAD, &r);
  return r.ru_minflt;
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(q * double(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t tokens = 32768;
  std::vector<std::string> specs;
  bool fork = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokens" && i + 1 < argc) tokens = std::stoul(argv[++i]);
    else if (a == "--spec" && i + 1 < argc) specs.push_back(argv[++i]);
    else if (a == "--no-fork") fork = false;
    else {
      std::fprintf(stderr, "usage: kvq_bench_append [--tokens N] [--spec SPEC ...] [--no-fork]\n");
      return 2;
    }
  }
  if (specs.empty()) specs = {"k=q4_0,v=q4_0", "k=q4_0,v=q4_0,window=128"};
  const std::size_t layers = 28, kv_heads = 8, d = 128;
  const kvq::ModelShape shape = kvq::ModelShape::dense(layers, 24, kv_heads, d, tokens);

  // Distinct random tokens, cycled (generating them per step would dominate).
  constexpr std::size_t kDistinct = 509;
  kvq::Rng rng(5);
  std::vector<float> k(kDistinct * kv_heads * d), v(k.size());
  for (auto& x : k) x = static_cast<float>(rng.normal());
  for (auto& x : v) x = static_cast<float>(rng.normal());

  std::printf("# Append latency: %zu layers x %zu KV heads x head_dim %zu, one token per layer per step, %zu steps\n",
              layers, kv_heads, d, tokens);
  std::printf("# load average at start: %s\n\n", load().c_str());
  std::printf("| spec | clock | median ms | mean ms | p99 ms | p99.9 ms | worst ms | worst / median | worst step | "
              "its page faults | page faults, all steps | payload MiB | capacity MiB |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  // One run of `tokens` steps on `cache`: per step wall time, thread CPU time
  // and minor page faults.
  struct Steps {
    std::vector<double> wall, cpu;
    std::vector<long> faults;
  };
  const auto run = [&](kvq::Cache& cache) {
    Steps r{std::vector<double>(tokens), std::vector<double>(tokens), std::vector<long>(tokens)};
    for (std::size_t t = 0; t < tokens; ++t) {
      const std::size_t off = (t % kDistinct) * kv_heads * d;
      const long f0 = minor_faults();
      const double t0 = now(), c0 = cpu_now();
      for (std::size_t l = 0; l < layers; ++l) cache.append(l, k.data() + off, v.data() + off);
      r.cpu[t] = cpu_now() - c0;
      r.wall[t] = now() - t0;
      r.faults[t] = minor_faults() - f0;
    }
    return r;
  };
  const auto row = [&](const std::string& label, const char* clock, const std::vector<double>& steps,
                       const std::vector<long>& faults, const kvq::Cache& cache) {
    double mean = 0;
    for (double x : steps) mean += x;
    mean /= double(tokens);
    const auto worst_at = std::max_element(steps.begin(), steps.end());
    const double med = quantile(steps, 0.5), worst = *worst_at;
    const std::size_t w = static_cast<std::size_t>(worst_at - steps.begin());
    std::printf("| %s | %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f | %zu | %ld | %ld | %.1f | %.1f |\n",
                label.c_str(), clock, 1e3 * med, 1e3 * mean, 1e3 * quantile(steps, 0.99),
                1e3 * quantile(steps, 0.999), 1e3 * worst, worst / med, w, faults[w],
                std::accumulate(faults.begin(), faults.end(), 0L), double(cache.bytes_used()) / 1048576.0,
                double(cache.capacity_bytes()) / 1048576.0);
    std::fflush(stdout);
  };
  // Two runs of the same appends into fresh caches, then the step-by-step
  // minimum of their CPU times: a cost of kvq's own recurs at its step in
  // both runs, a time slice lost to the host (a VM's vCPU descheduled counts
  // as this thread's CPU time) rarely hits the same step twice.
  const auto measure = [&](const std::string& label, const auto& make_cache) {
    auto first = make_cache();
    const Steps a = run(first->cache());
    row(label, "wall", a.wall, a.faults, first->cache());
    row(label, "thread CPU", a.cpu, a.faults, first->cache());
    first.reset();
    auto second = make_cache();
    const Steps b = run(second->cache());
    std::vector<double> least(tokens);
    for (std::size_t t = 0; t < tokens; ++t) least[t] = std::min(a.cpu[t], b.cpu[t]);
    row(label, "thread CPU, per-step min of 2 runs", least, b.faults, second->cache());
  };
  struct Plain {
    kvq::Cache c;
    kvq::Cache& cache() { return c; }
  };
  // A pool whose pages were allocated and touched up front
  // (CachePool::preallocate): no step pays for allocating or faulting memory in.
  struct Pooled {
    kvq::CachePool pool;
    kvq::CachePool::SequenceId id = 0;
    Pooled(const kvq::ModelShape& shape, const std::string& spec, std::size_t capacity)
        : pool(shape, kvq::CacheSpec::parse(spec), 2 * capacity) {
      // Pages hold whole tiles, a few bytes short of a 16 KiB block: 1/32 more
      // blocks than the capacity's bytes cover every page the run will take.
      pool.preallocate(capacity + capacity / 32);
      id = pool.create();
    }
    kvq::Cache& cache() { return pool.sequence(id); }
  };
  for (const std::string& spec : specs) {
    std::size_t capacity = 0;
    measure(spec, [&] {
      return std::make_unique<Plain>(Plain{kvq::Cache(shape, kvq::CacheSpec::parse(spec))});
    });
    {
      kvq::Cache probe(shape, kvq::CacheSpec::parse(spec));
      for (std::size_t t = 0; t < tokens; t += kDistinct) {
        const std::size_t n = std::min(kDistinct, tokens - t);
        for (std::size_t l = 0; l < layers; ++l) probe.append(l, n, k.data(), v.data());
      }
      capacity = probe.capacity_bytes();
    }
    measure(spec + " (pool, preallocated)", [&] { return std::make_unique<Pooled>(shape, spec, capacity); });
  }
  if (fork) {
    std::printf("\n| spec (fork at %zu tokens) | fork ms | bytes a fork adds | copy ms | copy bytes |\n", tokens);
    std::printf("|---|---|---|---|---|\n");
    for (const std::string& spec : specs) {
      kvq::CachePool pool(shape, kvq::CacheSpec::parse(spec), std::size_t{64} << 30);
      const auto id = pool.create();
      for (std::size_t t = 0; t < tokens; t += kDistinct) {
        const std::size_t n = std::min(kDistinct, tokens - t);
        for (std::size_t l = 0; l < layers; ++l) pool.sequence(id).append(l, n, k.data(), v.data());
      }
      std::vector<double> forks, copies;
      std::size_t added = 0, copy_bytes = 0;
      for (int i = 0; i < 15; ++i) {
        const std::size_t before = pool.committed();
        double t0 = now();
        const auto child = pool.fork(id);
        forks.push_back(now() - t0);
        added = pool.committed() - before;
        pool.destroy(child);
        t0 = now();
        {
          const kvq::Cache copy(pool.sequence(id));
          copies.push_back(now() - t0);
          copy_bytes = pool.committed() - before;
        }
      }
      std::printf("| %s | %.3f | %zu | %.3f | %zu |\n", spec.c_str(), 1e3 * quantile(forks, 0.5), added,
                  1e3 * quantile(copies, 0.5), copy_bytes);
      std::fflush(stdout);
    }
  }
  std::printf("\n# load average at end: %s\n", load().c_str());
}

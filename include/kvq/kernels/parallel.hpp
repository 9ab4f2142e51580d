// Splitting one long run of compressed rows (or tiles) across threads.
//
// Long contexts make a single KV head's run large (32K tokens of q4_0 at
// head_dim 128 are 2.3 MB), and one core rarely saturates a socket's memory
// bandwidth, so a run can be cut into chunks of whole rows. Engines usually
// own a thread pool already: every function here takes a `parallel_for`
// callable, parallel_for(n_chunks, fn), which must call fn(i) exactly once
// for each i in [0, n_chunks), in any order and on any threads, and return
// when all calls are done. ThreadPool below is a small built-in one.
//
// scores writes disjoint slices of the output, so it equals the single-thread
// result exactly. accumulate gives each chunk its own zeroed partial sums and
// adds them to acc in chunk order afterwards: deterministic for a given chunk
// count, equal to the single-thread result within float summation tolerance.
// Arguments are validated once, before any chunk runs; fn does not throw.
#pragma once

#include <kvq/kernels/dispatch.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace kvq::kernels {
// Same configuration-named namespace as the wrappers these templates call.
inline namespace KVQ_KERNELS_ABI {

// Rows (tiles) per chunk: whole multiples of 8, at least `min_rows` so chunks
// are worth a thread hand-off.
inline std::size_t rows_per_chunk(std::size_t n_rows, std::size_t n_chunks, std::size_t min_rows = 256) {
  if (n_chunks <= 1) return n_rows;
  std::size_t per = (n_rows + n_chunks - 1) / n_chunks;
  per = std::max(per, min_rows);
  return (per + 7) / 8 * 8;
}

template <class Codec, class ParallelFor>
void scores_parallel(const Codec& codec, const float* q, std::size_t n_q, std::size_t q_stride,
                     const std::byte* rows, std::size_t n_rows, float* out, std::size_t out_stride,
                     std::size_t n_chunks, ParallelFor&& parallel_for) {
  const std::size_t g = codec.tokens_per_tile();  // keys per tile (1 for row codecs)
  detail::check_run("kvq::kernels::scores_parallel", codec.head_dim(), q, n_q, q_stride, rows, n_rows, out,
                    out_stride, n_rows * g);
  if (n_q == 0 || n_rows == 0) return;
  const std::size_t per = rows_per_chunk(n_rows, n_chunks, std::max<std::size_t>(1, 256 / g));
  const std::size_t chunks = (n_rows + per - 1) / per;
  const std::size_t tile = codec.bytes_per_tile();
  parallel_for(chunks, [&](std::size_t i) {
    const std::size_t t0 = i * per, n = std::min(per, n_rows - t0);
    scores(codec, q, n_q, q_stride, rows + t0 * tile, n, out + t0 * g, out_stride);
  });
}

template <class Codec, class ParallelFor>
void accumulate_parallel(const Codec& codec, const float* w, std::size_t n_q, std::size_t w_stride,
                         const std::byte* rows, std::size_t n_rows, float* acc, std::size_t acc_stride,
                         std::size_t n_chunks, ParallelFor&& parallel_for) {
  const std::size_t g = codec.tokens_per_tile();
  detail::check_run("kvq::kernels::accumulate_parallel", n_rows * g, w, n_q, w_stride, rows, n_rows, acc,
                    acc_stride, codec.head_dim());
  if (n_q == 0 || n_rows == 0) return;
  const std::size_t per = rows_per_chunk(n_rows, n_chunks, std::max<std::size_t>(1, 256 / g));
  const std::size_t chunks = (n_rows + per - 1) / per;
  if (chunks == 1) return accumulate(codec, w, n_q, w_stride, rows, n_rows, acc, acc_stride);
  const std::size_t hd = codec.head_dim(), tile = codec.bytes_per_tile();
  std::vector<float> partial(chunks * n_q * hd, 0.0f);
  parallel_for(chunks, [&](std::size_t i) {
    const std::size_t t0 = i * per, n = std::min(per, n_rows - t0);
    accumulate(codec, w + t0 * g, n_q, w_stride, rows + t0 * tile, n, partial.data() + i * n_q * hd, hd);
  });
  for (std::size_t i = 0; i < chunks; ++i)
    for (std::size_t qi = 0; qi < n_q; ++qi) {
      const float* p = partial.data() + (i * n_q + qi) * hd;
      float* a = acc + qi * acc_stride;
      for (std::size_t j = 0; j < hd; ++j) a[j] += p[j];
    }
}

}  // namespace KVQ_KERNELS_ABI

// A minimal fork-join pool: `threads` participants counting the calling
// thread, which works too. Callable as a parallel_for. One job at a time
// (concurrent calls are serialized); tasks are claimed dynamically, so uneven
// chunks or a busy core do not stall the others. Workers spin briefly (~20 us)
// for the next job before they block, and the caller spins for the last task
// before it blocks: waking a blocked thread cost ~65 us per call on the
// development VM, a third of a 32K-token decode step's work.
class ThreadPool {
 public:
  explicit ThreadPool(std::size_t threads) {
    for (std::size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { work_loop(); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  std::size_t size() const noexcept { return workers_.size() + 1; }

  template <class Fn>
  void operator()(std::size_t n_tasks, Fn&& fn) {
    if (workers_.empty() || n_tasks <= 1) {
      for (std::size_t i = 0; i < n_tasks; ++i) fn(i);
      return;
    }
    using F = std::remove_reference_t<Fn>;
    const Job job{[](void* ctx, std::size_t i) { (*static_cast<F*>(ctx))(i); },
                  const_cast<void*>(static_cast<const void*>(&fn)), n_tasks};
    std::lock_guard<std::mutex> one_job(call_mu_);
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = job;
      next_.store(0);
      active_.store(workers_.size(), std::memory_order_relaxed);
      ++generation_;
      published_.store(generation_, std::memory_order_release);
    }
    wake_.notify_all();
    run(job);
    for (int i = 0; i < kSpins && active_.load(std::memory_order_acquire) != 0; ++i) spin_pause();
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [&] { return active_.load(std::memory_order_relaxed) == 0; });
  }

 private:
  struct Job {
    void (*call)(void*, std::size_t) = nullptr;
    void* ctx = nullptr;
    std::size_t n = 0;
  };

  void run(const Job& job) {
    for (std::size_t i; (i = next_.fetch_add(1)) < job.n;) job.call(job.ctx, i);
  }

  static constexpr int kSpins = 1 << 14;
  static void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  void work_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      // Spin for a job that follows closely (the next layer's attend), then block.
      for (int i = 0; i < kSpins && published_.load(std::memory_order_acquire) == seen; ++i) spin_pause();
      Job job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      run(job);
      std::lock_guard<std::mutex> lk(mu_);
      if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) done_.notify_one();
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  Job job_;
  std::uint64_t generation_ = 0;
  std::atomic<std::uint64_t> published_{0};  // generation_, readable without the lock (spinning)
  std::atomic<std::size_t> active_{0};       // workers still running the job
  bool stop_ = false;
  std::atomic<std::size_t> next_{0};
};

}  // namespace kvq::kernels

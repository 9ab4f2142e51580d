// Thread-safety contract of kvq::CachePool (include/kvq/cache/cache_pool.hpp,
// docs/CACHE.md "Pools of sequences"): calls on different sequences may run
// at once, though they share pages (forks) and the budget; const calls on one
// sequence (attend, fork) may run beside each other.
// Every thread owns a fork of one shared prefix and appends to it, rolls it
// back, forks and destroys children of it and attends on it, while another
// thread attends the shared parent and forks it; a small budget makes the
// threads race for the last pages. Each sequence must end bit-identical to an
// independent cache given the same operations on one thread, the budget must
// hold at every check, and every byte must be freed at the end. Run under
// ThreadSanitizer (the KVQ_TSAN build) to also catch races that happen to
// give the right bytes.
#include "support/cache_fixtures.hpp"

#include <kvq/cache/cache_pool.hpp>

#include <atomic>
#include <thread>
#include <vector>

namespace {
using namespace kvq;
using kvq::test::random_tokens;
using kvq::test::snap;

const ModelShape kPoolShape = ModelShape::dense(2, 4, 2, 32, 4096);
const char* kPoolSpec = "k=q4_1,v=q8_0,window=16,sinks=2,tier=100:q2_1/q2_1,rollback=4";
constexpr std::size_t kThreads = 3, kSteps = 60, kPrefix = 500;

struct Step {
  std::size_t n = 0;  // tokens (0: roll back 3)
  std::vector<float> k, v;
};

std::vector<Step> make_steps(std::size_t t) {
  Rng rng(50 + t);
  std::vector<Step> steps;
  for (std::size_t i = 0; i < kSteps; ++i) {
    Step s;
    s.n = i % 7 == 6 ? 0 : 1 + i % 5;
    s.k = random_tokens(rng, std::max<std::size_t>(1, s.n), kPoolShape.n_kv_heads, kPoolShape.head_dim);
    s.v = random_tokens(rng, std::max<std::size_t>(1, s.n), kPoolShape.n_kv_heads, kPoolShape.head_dim);
    steps.push_back(std::move(s));
  }
  return steps;
}

// Applies one step to at most `layers` layers; returns the layers (calls) the
// budget admitted: a refused call changes nothing, the ones before it stay.
std::size_t apply(Cache& c, const Step& s, std::size_t layers = kPoolShape.n_layers) {
  std::size_t done = 0;
  try {
    if (s.n == 0) {
      c.truncate(c.length(0) >= 3 ? c.length(0) - 3 : 0);
      done = kPoolShape.n_layers;
    } else {
      for (; done < layers; ++done) c.append(done, s.n, s.k.data(), s.v.data());
    }
  } catch (const Error& e) {
    if (e.code() != Errc::budget_exceeded) throw;
  }
  return done;
}

void prefill(Cache& c) {
  Rng rng(9);
  const auto k = random_tokens(rng, kPrefix, kPoolShape.n_kv_heads, kPoolShape.head_dim);
  const auto v = random_tokens(rng, kPrefix, kPoolShape.n_kv_heads, kPoolShape.head_dim);
  for (std::size_t l = 0; l < kPoolShape.n_layers; ++l) c.append(l, kPrefix, k.data(), v.data());
}
}  // namespace

TEST_CASE("threads: pool sequences sharing a prefix and a budget, on different threads",
          "[reliability][threads][pool]") {
  for (std::size_t budget : {std::size_t{64} << 20, std::size_t{900} << 10}) {
    CachePool pool(kPoolShape, CacheSpec::parse(kPoolSpec), budget);
    const auto parent = pool.create();
    prefill(pool.sequence(parent));
    const auto parent_bytes = snap(pool.sequence(parent));
    std::vector<CachePool::SequenceId> own;
    for (std::size_t t = 0; t < kThreads; ++t) own.push_back(pool.fork(parent));
    std::vector<std::vector<Step>> steps;
    for (std::size_t t = 0; t < kThreads; ++t) steps.push_back(make_steps(t));
    std::vector<std::vector<std::size_t>> applied(kThreads);
    std::atomic<int> errors{0}, over_budget{0}, parent_changed{0};

    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        try {
          std::vector<float> q(kPoolShape.n_q_heads * kPoolShape.head_dim, 0.25f), out(q.size());
          for (const Step& s : steps[t]) {
            Cache& c = pool.sequence(own[t]);
            applied[t].push_back(apply(c, s));
            c.attend(0, q.data(), out.data());
            try {  // a child forked and dropped: shares, then releases, pages
              const auto child = pool.fork(own[t]);
              apply(pool.sequence(child), s);
              pool.destroy(child);
            } catch (const Error& e) {
              if (e.code() != Errc::budget_exceeded) throw;
            }
            if (pool.committed() > pool.budget()) ++over_budget;
          }
        } catch (...) {
          ++errors;
        }
      });
    threads.emplace_back([&] {  // reads and forks the shared parent
      try {
        std::vector<float> q(kPoolShape.n_q_heads * kPoolShape.head_dim, 0.5f), out(q.size());
        const CachePool::SequenceId ids[] = {parent};
        const float* qp[] = {q.data()};
        float* op[] = {out.data()};
        for (std::size_t i = 0; i < kSteps; ++i) {
          pool.attend(1, ids, qp, op);
          try {
            pool.destroy(pool.fork(parent));
          } catch (const Error& e) {
            if (e.code() != Errc::budget_exceeded) throw;
          }
          if (snap(pool.sequence(parent)) != parent_bytes) ++parent_changed;
        }
      } catch (...) {
        ++errors;
      }
    });
    for (auto& th : threads) th.join();

    CHECK(errors.load() == 0);
    CHECK(over_budget.load() == 0);
    CHECK(parent_changed.load() == 0);
    // Each sequence equals an independent cache given the steps that were admitted.
    for (std::size_t t = 0; t < kThreads; ++t) {
      Cache oracle(kPoolShape, CacheSpec::parse(kPoolSpec));
      prefill(oracle);
      for (std::size_t i = 0; i < kSteps; ++i)
        if (applied[t][i]) REQUIRE(apply(oracle, steps[t][i], applied[t][i]) == applied[t][i]);
      CHECK(snap(pool.sequence(own[t])) == snap(oracle));
    }
    for (auto id : pool.sequences()) pool.destroy(id);
    CHECK(pool.committed() == 0);
  }
}

// Thread-safety contract of kvq::Cache (docs/CACHE.md "Threads"):
//  - the const calls (attend, scores, accumulate, segments, memory, save) keep
//    their scratch on the caller's stack, so any number may run at once;
//  - append(layer) touches only that layer's storage, so appends to different
//    layers may run at once, beside const calls on other layers.
// Readers hammer one layer while writers append to (and attend on) their own
// layers; every reader result must equal the single-thread result bit for
// bit, and the final cache must equal one built by a single thread. Run under
// ThreadSanitizer (the KVQ_TSAN build, docs/RELIABILITY.md) to also catch races
// that happen to produce the right numbers.
#include "support/cache_fixtures.hpp"
#include "support/same_bits.hpp"
#include "support/segments.hpp"

#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

namespace {
using namespace kvq;
using kvq::test::random_tokens;

// Layer 0 is read, layers 1..3 are written. A tile codec (pc4, G = 128) on
// layers 0-2, row codecs on layer 3, a demotion tier, sinks and a rollback
// reserve: every kind of stored state, and writers that demote while readers read.
const ModelShape kThreadsShape = ModelShape::dense(4, 4, 2, 64, 4096);
const char* kThreadsSpec = "k=pc4,v=q8_0,boundary=0+1:q8_0/q4_0,window=16,sinks=2,tier=160:q2_1/q2_1,rollback=4";
constexpr std::size_t kPrefill = 300, kReaders = 3, kRounds = 4, kBatches = 12;

using kvq::test::same_bits;

// Everything a reader computes from one layer with the const API.
struct Reading {
  std::vector<float> decode_out, prefill_out, scores, acc;
  std::vector<std::size_t> segment_tokens;
  MemoryUse memory;
  bool operator==(const Reading& o) const {
    return same_bits(decode_out, o.decode_out) && same_bits(prefill_out, o.prefill_out) &&
           same_bits(scores, o.scores) && same_bits(acc, o.acc) && segment_tokens == o.segment_tokens &&
           memory == o.memory;
  }
};

Reading read_layer(const Cache& c, std::size_t layer, const std::vector<float>& q) {
  const std::size_t d = kThreadsShape.head_dim, nq = kThreadsShape.n_q_heads, n = c.length(layer);
  Reading r{std::vector<float>(nq * d), std::vector<float>(4 * nq * d), std::vector<float>(n),
            std::vector<float>(d), {}, c.memory(layer)};
  c.attend(layer, q.data(), r.decode_out.data());
  c.attend(layer, 4, q.data(), r.prefill_out.data());
  c.scores(layer, 3, q.data(), r.scores.data());
  std::vector<float> w(n);
  for (std::size_t t = 0; t < n; ++t) w[t] = 1.0f / static_cast<float>(1 + t % 7);
  c.accumulate(layer, 1, w.data(), r.acc.data());
  for (StreamKind kind : {StreamKind::key, StreamKind::value})
    for (std::size_t h = 0; h < kThreadsShape.n_kv_heads; ++h)
      for (const auto& s : kvq::test::segments_of(c, layer, kind, h)) r.segment_tokens.push_back(s.n_tokens);
  return r;
}

// The writes of layer `layer`: batches of 1..9 tokens, each followed by a
// decode attend on that layer (same thread: allowed).
struct Writes {
  std::vector<std::vector<float>> k, v, q;
};
Writes make_writes(std::size_t layer) {
  Rng rng(100 + layer);
  Writes w;
  for (std::size_t b = 0; b < kBatches; ++b) {
    const std::size_t n = 1 + b % 9;
    w.k.push_back(random_tokens(rng, n, kThreadsShape.n_kv_heads, kThreadsShape.head_dim));
    w.v.push_back(random_tokens(rng, n, kThreadsShape.n_kv_heads, kThreadsShape.head_dim));
    w.q.push_back(random_tokens(rng, 1, kThreadsShape.n_q_heads, kThreadsShape.head_dim));
  }
  return w;
}
// Applies the writes; returns the attention outputs after each batch.
std::vector<std::vector<float>> apply_writes(Cache& c, std::size_t layer, const Writes& w) {
  std::vector<std::vector<float>> outs;
  for (std::size_t b = 0; b < w.k.size(); ++b) {
    c.append(layer, w.k[b].size() / (kThreadsShape.n_kv_heads * kThreadsShape.head_dim), w.k[b].data(), w.v[b].data());
    outs.emplace_back(kThreadsShape.n_q_heads * kThreadsShape.head_dim);
    c.attend(layer, w.q[b].data(), outs.back().data());
  }
  return outs;
}

Cache prefilled() {
  Cache c(kThreadsShape, CacheSpec::parse(kThreadsSpec));
  Rng rng(7);
  for (std::size_t layer = 0; layer < kThreadsShape.n_layers; ++layer) {
    const std::size_t n = kPrefill + 37 * layer;
    const auto k = random_tokens(rng, n, kThreadsShape.n_kv_heads, kThreadsShape.head_dim);
    const auto v = random_tokens(rng, n, kThreadsShape.n_kv_heads, kThreadsShape.head_dim);
    c.append(layer, n, k.data(), v.data());
  }
  return c;
}
}  // namespace

TEST_CASE("threads: concurrent readers of one layer, writers on other layers", "[reliability][threads][cache]") {
  Rng rng(3);
  const auto q = random_tokens(rng, 4, kThreadsShape.n_q_heads, kThreadsShape.head_dim);
  std::vector<Writes> writes;
  for (std::size_t layer = 1; layer < kThreadsShape.n_layers; ++layer) writes.push_back(make_writes(layer));

  // Single thread: the reference reading, writer outputs and final cache.
  Cache expected = prefilled();
  const Reading reference = read_layer(expected, 0, q);
  std::vector<std::vector<std::vector<float>>> expected_outs;
  for (std::size_t layer = 1; layer < kThreadsShape.n_layers; ++layer)
    expected_outs.push_back(apply_writes(expected, layer, writes[layer - 1]));

  Cache cache = prefilled();
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < kReaders; ++t)
    pool.emplace_back([&] {
      try {
        for (std::size_t round = 0; round < kRounds; ++round)
          if (!(read_layer(cache, 0, q) == reference)) ++mismatches;
      } catch (...) {
        ++errors;
      }
    });
  std::vector<std::vector<std::vector<float>>> outs(writes.size());
  for (std::size_t i = 0; i < writes.size(); ++i)
    pool.emplace_back([&, i] {
      try {
        outs[i] = apply_writes(cache, i + 1, writes[i]);
      } catch (...) {
        ++errors;
      }
    });
  for (auto& th : pool) th.join();

  CHECK(errors.load() == 0);
  CHECK(mismatches.load() == 0);
  for (std::size_t i = 0; i < outs.size(); ++i) {
    REQUIRE(outs[i].size() == expected_outs[i].size());
    for (std::size_t b = 0; b < outs[i].size(); ++b) CHECK(same_bits(outs[i][b], expected_outs[i][b]));
  }
  CHECK(snapshot_bytes(cache) == snapshot_bytes(expected));
}

TEST_CASE("threads: concurrent const calls on every layer, and saves, of one cache", "[reliability][threads][cache]") {
  const Cache cache = prefilled();
  Rng rng(5);
  const auto q = random_tokens(rng, 4, kThreadsShape.n_q_heads, kThreadsShape.head_dim);
  std::vector<Reading> reference;
  for (std::size_t layer = 0; layer < kThreadsShape.n_layers; ++layer) reference.push_back(read_layer(cache, layer, q));
  const auto saved = snapshot_bytes(cache);

  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      try {
        for (std::size_t round = 0; round < kRounds; ++round) {
          for (std::size_t i = 0; i < kThreadsShape.n_layers; ++i) {
            const std::size_t layer = (i + t) % kThreadsShape.n_layers;  // threads start on different layers
            if (!(read_layer(cache, layer, q) == reference[layer])) ++mismatches;
          }
          if (t % 2 && snapshot_bytes(cache) != saved) ++mismatches;
        }
      } catch (...) {
        ++errors;
      }
    });
  for (auto& th : pool) th.join();
  CHECK(errors.load() == 0);
  CHECK(mismatches.load() == 0);
}

TEST_CASE("threads: attend on a thread pool, from several callers at once, equals one thread",
          "[reliability][threads][cache]") {
  // The threaded attend: heads x blocks x token ranges on a shared ThreadPool,
  // per-thread workspaces, partials merged by the caller; two callers share the
  // pool (its calls are serialized) while a third attends single-threaded.
  const ModelShape shape = ModelShape::dense(1, 4, 1, 64, 12000);
  Cache cache(shape, CacheSpec::parse("k=pc4,v=q4_1,window=16,sinks=2"));
  Rng rng(8);
  const std::size_t n = 10000;
  const auto k = random_tokens(rng, n, 1, 64), v = random_tokens(rng, n, 1, 64);
  cache.append(0, n, k.data(), v.data());
  const auto q = random_tokens(rng, 2, 4, 64);
  std::vector<float> one(q.size());
  cache.attend(0, 2, q.data(), one.data());
  kernels::ThreadPool tp(2);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&, t] {
      std::vector<float> out(q.size());
      for (int round = 0; round < 3; ++round) {
        if (t == 2)
          cache.attend(0, 2, q.data(), out.data());
        else
          cache.attend(0, 2, q.data(), out.data(), tp);
        for (std::size_t i = 0; i < out.size(); ++i)
          if (!(std::fabs(out[i] - one[i]) <= 1e-5f * (1.0f + std::fabs(one[i])))) ++mismatches;
      }
    });
  for (auto& th : callers) th.join();
  CHECK(mismatches.load() == 0);
}

TEST_CASE("threads: heavy hitters, each layer appended and attended by its own thread", "[reliability][threads][cache]") {
  // With heavy=N attend changes its layer's state: calls on one layer must not
  // overlap, calls on different layers may (docs/CACHE.md). Every thread owns a
  // layer, attends it on a shared ThreadPool (tasks write the caller's mass
  // buffer) and by itself; the cache must equal one built by a single thread.
  const ModelShape shape = ModelShape::dense(3, 4, 2, 64, 12000);
  const CacheSpec spec = CacheSpec::parse("k=q4_0,v=q4_1,window=16,sinks=1,heavy=8,tier=200:q2_1/q2_1");
  Rng rng(9);
  const std::size_t n = 9000, kd = 2 * 64;
  const auto k = random_tokens(rng, n, 2, 64), v = random_tokens(rng, n, 2, 64);
  const auto q = random_tokens(rng, 1, 4, 64);
  const auto build = [&](Cache& c, std::size_t layer, kernels::ThreadPool* tp) {
    std::vector<float> out(4 * 64), qi(q);
    for (std::size_t t = 0; t < n; t += 300) {
      c.append(layer, 300, k.data() + t * kd, v.data() + t * kd);
      for (std::size_t i = 0; i < qi.size(); ++i) qi[i] = q[i] + k[(t / 2) * kd + i % kd];  // looks up an old key
      if (tp && (t / 300) % 2) c.attend(layer, 1, qi.data(), out.data(), *tp);
      else c.attend(layer, 1, qi.data(), out.data());
    }
  };
  Cache serial(shape, spec), threaded(shape, spec);
  kernels::ThreadPool tp(2);
  for (std::size_t l = 0; l < 3; ++l) build(serial, l, &tp);
  std::vector<std::thread> owners;
  for (std::size_t l = 0; l < 3; ++l) owners.emplace_back([&, l] { build(threaded, l, &tp); });
  for (auto& th : owners) th.join();
  for (std::size_t l = 0; l < 3; ++l) CHECK(threaded.heavy_positions(l, 1) == serial.heavy_positions(l, 1));
  CHECK(kvq::snapshot_bytes(threaded) == kvq::snapshot_bytes(serial));
}

#include "support/cache_fixtures.hpp"

#include <kvq/cache/cache_pool.hpp>
#include <kvq/cache/snapshot.hpp>
#include <kvq/kernels/parallel.hpp>

#include <cstring>
#include <vector>

using namespace kvq;
using kvq::test::error_code;
using kvq::test::random_tokens;
using kvq::test::snap;

namespace {

const ModelShape kPoolShape = ModelShape::dense(3, 4, 2, 64, 4096);
// Sinks, two tiers, a window, a rollback reserve: every kind of move.
const char* kPoolSpec = "k=q4_1,v=q4_1,window=40,sinks=3,tier=150:q2_1/q2_1,rollback=9";

// A sequence's history, replayed on an independent Cache as the oracle.
struct Op {
  std::size_t n = 0;         // tokens appended to every layer (0: truncate)
  std::size_t position = 0;  // truncate position
  std::uint64_t seed = 0;
};

void apply(Cache& c, const Op& op) {
  if (op.n == 0) return c.truncate(op.position);
  Rng rng(op.seed);
  for (std::size_t l = 0; l < kPoolShape.n_layers; ++l) {
    const auto k = random_tokens(rng, op.n, kPoolShape.n_kv_heads, kPoolShape.head_dim);
    const auto v = random_tokens(rng, op.n, kPoolShape.n_kv_heads, kPoolShape.head_dim);
    c.append(l, op.n, k.data(), v.data());
  }
}

Cache replay(const std::vector<Op>& ops) {
  Cache c(kPoolShape, CacheSpec::parse(kPoolSpec));
  for (const Op& op : ops) apply(c, op);
  return c;
}

Op random_op(Rng& rng, std::size_t length) {
  const std::uint64_t r = rng.next_u64();
  if (r % 4 == 0 && length > 0) {
    // Mostly rollbacks within the reserve (exact), sometimes deep ones.
    const std::size_t back = r % 3 == 0 ? (r >> 8) % (length + 1) : (r >> 8) % std::min<std::size_t>(length + 1, 9);
    return {0, length - back, 0};
  }
  return {1 + (r >> 16) % (r % 7 == 0 ? 200 : 3), 0, rng.next_u64()};
}

std::size_t length_after(std::size_t length, const Op& op) { return op.n ? length + op.n : std::min(length, op.position); }

}  // namespace

TEST_CASE("cache pool: sequences behave as independent caches", "[cache][pool]") {
  CachePool pool(kPoolShape, CacheSpec::parse(kPoolSpec), std::size_t{64} << 20);
  Rng rng(21);
  std::vector<CachePool::SequenceId> ids;
  std::vector<std::vector<Op>> history;
  std::vector<std::size_t> lengths;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(pool.create());
    history.emplace_back();
    lengths.push_back(0);
  }
  for (int step = 0; step < 60; ++step) {
    const std::size_t s = rng.next_u64() % ids.size();
    const Op op = random_op(rng, lengths[s]);
    apply(pool.sequence(ids[s]), op);
    history[s].push_back(op);
    lengths[s] = length_after(lengths[s], op);
  }
  for (std::size_t s = 0; s < ids.size(); ++s) {
    const Cache oracle = replay(history[s]);
    CHECK(snap(pool.sequence(ids[s])) == snap(oracle));
    CHECK(pool.sequence(ids[s]).memory() == oracle.memory());
  }
  // Every byte committed is some sequence's: exclusive bytes and each shared page once.
  std::size_t exclusive = 0;
  for (auto id : ids) exclusive += pool.bytes(id).exclusive;
  CHECK(pool.committed() == exclusive);
  for (auto id : ids) pool.destroy(id);
  CHECK(pool.committed() == 0);
  CHECK(pool.size() == 0);
  CHECK(error_code([&] { pool.sequence(ids[0]); }) == Errc::out_of_range);
}

TEST_CASE("cache pool: an append that does not fit fails before changing anything", "[cache][pool]") {
  // A budget a few pages short of two sequences' growth.
  CachePool pool(kPoolShape, CacheSpec::parse(kPoolSpec), 1u << 20);
  const auto a = pool.create(), b = pool.create();
  Rng rng(5);
  std::size_t refused = 0;
  for (int step = 0; step < 4000 && refused < 20; ++step) {
    const auto id = step % 2 ? a : b;
    Cache& c = pool.sequence(id);
    const std::size_t n = 1 + rng.next_u64() % 40;
    const auto k = random_tokens(rng, n, kPoolShape.n_kv_heads, kPoolShape.head_dim);
    const auto v = random_tokens(rng, n, kPoolShape.n_kv_heads, kPoolShape.head_dim);
    const std::size_t layer = rng.next_u64() % kPoolShape.n_layers;
    if (c.length(layer) + n > kPoolShape.max_context) break;
    const auto before_a = snap(pool.sequence(a)), before_b = snap(pool.sequence(b));
    const std::size_t committed = pool.committed();
    try {
      c.append(layer, n, k.data(), v.data());
    } catch (const Error& e) {
      REQUIRE(e.code() == Errc::budget_exceeded);
      ++refused;
      CHECK(snap(pool.sequence(a)) == before_a);
      CHECK(snap(pool.sequence(b)) == before_b);
      CHECK(pool.committed() == committed);
    }
    REQUIRE(pool.committed() <= pool.budget());
  }
  CHECK(refused > 0);
  // Room again after one sequence is destroyed.
  pool.destroy(a);
  Cache& c = pool.sequence(b);
  const auto k = random_tokens(rng, 1, kPoolShape.n_kv_heads, kPoolShape.head_dim);
  CHECK_NOTHROW(c.append(0, k.data(), k.data()));
}

TEST_CASE("cache pool: fork shares pages; neither side's appends, truncations or demotions change the other",
          "[cache][pool]") {
  CachePool pool(kPoolShape, CacheSpec::parse(kPoolSpec), std::size_t{256} << 20);
  Rng rng(8);
  for (int trial = 0; trial < 6; ++trial) {
    const auto parent = pool.create();
    std::vector<Op> prefix;
    std::size_t length = 0;
    while (length < 300 + 150 * std::size_t(trial)) {
      const Op op = random_op(rng, length);
      apply(pool.sequence(parent), op);
      prefix.push_back(op);
      length = length_after(length, op);
    }
    const std::size_t before = pool.committed();
    const auto child = pool.fork(parent);
    // Only the undo log is copied; every page is shared.
    const auto bc = pool.bytes(child);
    CHECK(pool.committed() - before == bc.exclusive);
    CHECK(bc.shared == bc.capacity - bc.exclusive);
    CHECK(snap(pool.sequence(child)) == snap(pool.sequence(parent)));
    std::vector<Op> hp = prefix, hc = prefix;
    std::size_t lp = length, lc = length;
    for (int step = 0; step < 40; ++step) {
      if (rng.next_u64() % 2) {
        const Op op = random_op(rng, lp);
        apply(pool.sequence(parent), op);
        hp.push_back(op);
        lp = length_after(lp, op);
      } else {
        const Op op = random_op(rng, lc);
        apply(pool.sequence(child), op);
        hc.push_back(op);
        lc = length_after(lc, op);
      }
    }
    CHECK(snap(pool.sequence(parent)) == snap(replay(hp)));
    CHECK(snap(pool.sequence(child)) == snap(replay(hc)));
    pool.destroy(parent);
    CHECK(snap(pool.sequence(child)) == snap(replay(hc)));
    pool.destroy(child);
    CHECK(pool.committed() == 0);
  }
}

TEST_CASE("cache pool: a fork of a plain Cache and its copy are independent", "[cache][pool]") {
  Cache c(kPoolShape, CacheSpec::parse(kPoolSpec));
  std::vector<Op> h;
  Rng rng(3);
  for (int i = 0; i < 30; ++i) h.push_back(random_op(rng, 1000));
  for (auto& op : h) op.n = op.n ? op.n : 2;  // appends only
  for (const Op& op : h) apply(c, op);
  Cache f = c.fork(), copy = c;
  const Op more{5, 0, 77};
  apply(f, more);
  CHECK(snap(c) == snap(copy));
  auto hf = h;
  hf.push_back(more);
  CHECK(snap(f) == snap(replay(hf)));
}

TEST_CASE("cache pool: restore into a sequence; one that does not fit changes nothing", "[cache][pool]") {
  Cache src(kPoolShape, CacheSpec::parse(kPoolSpec));
  apply(src, {700, 0, 4});
  const auto bytes = snap(src);
  CachePool pool(kPoolShape, CacheSpec::parse(kPoolSpec), std::size_t{64} << 20);
  const auto id = pool.create();
  restore(pool.sequence(id), bytes);
  CHECK(snap(pool.sequence(id)) == bytes);
  CachePool small(kPoolShape, CacheSpec::parse(kPoolSpec), 200000);
  const auto s = small.create();
  apply(small.sequence(s), {3, 0, 9});
  const auto before = snap(small.sequence(s));
  CHECK(error_code([&] { restore(small.sequence(s), bytes); }) == Errc::budget_exceeded);
  CHECK(snap(small.sequence(s)) == before);
}

TEST_CASE("cache pool: batched decode attention equals each sequence's own attend", "[cache][pool]") {
  CachePool pool(kPoolShape, CacheSpec::parse(kPoolSpec), std::size_t{64} << 20);
  Rng rng(13);
  std::vector<CachePool::SequenceId> ids;
  for (std::size_t n : {1u, 37u, 300u, 1200u}) {
    ids.push_back(pool.create());
    apply(pool.sequence(ids.back()), {n, 0, rng.next_u64()});
  }
  ids.push_back(pool.fork(ids[2]));
  apply(pool.sequence(ids.back()), {5, 0, 99});
  const std::size_t qd = kPoolShape.n_q_heads * kPoolShape.head_dim;
  std::vector<std::vector<float>> q(ids.size()), out(ids.size(), std::vector<float>(qd)), ref = out;
  std::vector<const float*> qp;
  std::vector<float*> op;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    q[i] = random_tokens(rng, 1, kPoolShape.n_q_heads, kPoolShape.head_dim);
    qp.push_back(q[i].data());
    op.push_back(out[i].data());
  }
  kernels::ThreadPool threads(2);
  for (std::size_t layer = 0; layer < kPoolShape.n_layers; ++layer) {
    for (std::size_t i = 0; i < ids.size(); ++i) pool.sequence(ids[i]).attend(layer, q[i].data(), ref[i].data());
    pool.attend(layer, ids, qp.data(), op.data());
    for (std::size_t i = 0; i < ids.size(); ++i) CHECK(out[i] == ref[i]);
    for (auto& o : out) std::fill(o.begin(), o.end(), 0.0f);
    pool.attend(layer, ids, qp.data(), op.data(), threads);
    for (std::size_t i = 0; i < ids.size(); ++i) CHECK(out[i] == ref[i]);
  }
  const auto empty = pool.create();
  std::vector<CachePool::SequenceId> with_empty{ids[0], empty};
  CHECK(error_code([&] { pool.attend(0, with_empty, qp.data(), op.data()); }) == Errc::invalid_argument);
}

TEST_CASE("cache pool: batched attend finds heavy hitters as each sequence's own attend does", "[cache][pool][heavy]") {
  const auto spec = CacheSpec::parse("k=q4_0,v=q2_1,window=16,sinks=2,heavy=4");
  CachePool pool(kPoolShape, spec, std::size_t{64} << 20);
  std::vector<Cache> alone;
  std::vector<CachePool::SequenceId> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(pool.create());
    alone.emplace_back(kPoolShape, spec);
  }
  Rng rng(21);
  const std::size_t qd = kPoolShape.n_q_heads * kPoolShape.head_dim, kd = kPoolShape.n_kv_heads * kPoolShape.head_dim;
  std::vector<std::vector<float>> out(ids.size(), std::vector<float>(qd)), ref = out;
  for (int round = 0; round < 40; ++round)
    for (std::size_t layer = 0; layer < kPoolShape.n_layers; ++layer) {
      std::vector<std::vector<float>> q(ids.size());
      std::vector<const float*> qp;
      std::vector<float*> op;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const auto k = random_tokens(rng, 3 + i, kPoolShape.n_kv_heads, kPoolShape.head_dim);
        const auto v = random_tokens(rng, 3 + i, kPoolShape.n_kv_heads, kPoolShape.head_dim);
        pool.sequence(ids[i]).append(layer, 3 + i, k.data(), v.data());
        alone[i].append(layer, 3 + i, k.data(), v.data());
        q[i] = random_tokens(rng, 1, kPoolShape.n_q_heads, kPoolShape.head_dim);
        for (std::size_t t = 0; t < qd; ++t) q[i][t] += k[t % kd];  // leans on a key: it will be looked up
        qp.push_back(q[i].data());
        op.push_back(out[i].data());
        alone[i].attend(layer, q[i].data(), ref[i].data());
      }
      pool.attend(layer, ids, qp.data(), op.data());
      for (std::size_t i = 0; i < ids.size(); ++i) CHECK(out[i] == ref[i]);
    }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    CHECK(!alone[i].heavy_positions(0, 0).empty());
    CHECK(snapshot_bytes(pool.sequence(ids[i])) == snapshot_bytes(alone[i]));
  }
}

TEST_CASE("cache pool: preallocated pages give the same sequences and stay outside the budget's count",
          "[cache][pool]") {
  const std::size_t budget = 4u << 20;
  CachePool plain(kPoolShape, CacheSpec::parse(kPoolSpec), budget), pre(kPoolShape, CacheSpec::parse(kPoolSpec), budget);
  CHECK(pre.preallocate(std::size_t{64} << 20) == budget);  // bounded by the budget
  CHECK(pre.cached_bytes() >= budget);
  CHECK(pre.committed() == 0);
  const auto a = plain.create(), b = pre.create();
  Rng rng(11);
  std::size_t length = 0;
  for (int step = 0; step < 60; ++step) {
    const Op op = random_op(rng, length);
    apply(plain.sequence(a), op);
    apply(pre.sequence(b), op);
    length = length_after(length, op);
    REQUIRE(snap(pre.sequence(b)) == snap(plain.sequence(a)));
    REQUIRE(pre.committed() == plain.committed());
  }
  CHECK(pre.cached_bytes() < budget + budget / 2);  // pages moved out of the cache into the sequence
}

// Fuzz target: random sequences of CachePool operations -- create, append,
// fork, truncate, snapshot/restore, destroy, batched attend, and appends that
// exhaust the budget -- against an oracle of independent single-sequence
// caches receiving the same operations.
//
// Input: [spec][budget] then 3-byte operations [op][a][b]. After every
// operation: the pool's committed bytes are within its budget; every live
// sequence's snapshot equals its oracle's byte for byte (so a refused
// operation changed nothing, and no fork saw another's writes); a refused
// operation was refused with Errc::budget_exceeded, or with the same error
// the oracle gives. At the end, destroying every sequence frees every byte.
#include <kvq/kvq.hpp>

#include "fuzz_support.hpp"

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

using namespace kvq;
using kvq::fuzz::check;

namespace {

const char* const kSpecs[] = {
    "k=q4_0,v=q4_0",
    "k=q4_1,v=q8_0,window=12,sinks=2,tier=40:q2_1/q2_1,rollback=5",
    "k=pc4/g32,v=q4_1,window=8,sinks=1,tier=64:q2_1/q2_1",
    "k=turbo3,v=q3_1,window=5,rollback=3,precision=f16",
    "k=q4_0,v=q2_1,window=6,sinks=1,heavy=3,rollback=2",
};
const ModelShape kShape = ModelShape::dense(2, 4, 2, 32, 700);

std::optional<Errc> attempt(const auto& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return std::nullopt;
}

std::vector<float> tokens(std::uint64_t seed, std::size_t n) {
  Rng rng(seed);
  std::vector<float> x(n * kShape.n_kv_heads * kShape.head_dim);
  for (auto& v : x) v = static_cast<float>(rng.normal());
  return x;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kvq::fuzz::Input in(data, size);
  const CacheSpec spec = CacheSpec::parse(kSpecs[in.u8() % std::size(kSpecs)]);
  const std::size_t budget = std::size_t{16384} * (1 + in.u8() % 96);
  CachePool pool(kShape, spec, budget);
  std::map<CachePool::SequenceId, Cache> oracle;
  std::vector<CachePool::SequenceId> ids;  // live, in creation order
  auto pick = [&](std::uint8_t b) { return ids[b % ids.size()]; };

  // Runs op on the pool sequence and, unless refused for the budget, on its oracle.
  auto both = [&](CachePool::SequenceId id, const auto& op) {
    const auto got = attempt([&] { op(pool.sequence(id)); });
    if (got == Errc::budget_exceeded) return;
    const auto want = attempt([&] { op(oracle.at(id)); });
    check(got == want, "a pool sequence and its oracle disagree on whether an operation fails");
  };

  for (int step = 0; step < 48 && in.remaining() >= 3; ++step) {
    const std::uint8_t op = in.u8(), a = in.u8(), b = in.u8();
    switch (ids.empty() ? 0 : op % 8) {
      case 0:  // create
        if (ids.size() < 6) {
          ids.push_back(pool.create());
          oracle.emplace(ids.back(), Cache(kShape, spec));
        }
        break;
      case 1:    // append to one layer
      case 7: {  // a large batch to every layer: exhausts small budgets
        const bool big = op % 8 == 7;
        const std::size_t n = big ? 40 + b % 160 : 1 + b % 24;
        const auto k = tokens(a * 977u + b, n), v = tokens(a * 131u + b + 7, n);
        // One call per layer: a refused call changes nothing, the layers before it keep theirs.
        const auto id = pick(a);
        for (std::size_t l = big ? 0 : b % 2; l < (big ? 2 : b % 2 + 1); ++l)
          both(id, [&](Cache& c) { c.append(l, n, k.data(), v.data()); });
        break;
      }
      case 2: {  // fork
        const auto parent = pick(a);
        if (ids.size() >= 6) break;
        std::optional<CachePool::SequenceId> child;
        const auto got = attempt([&] { child = pool.fork(parent); });
        check(!got || got == Errc::budget_exceeded, "fork failed with an error other than the budget");
        if (child) {
          ids.push_back(*child);
          oracle.emplace(*child, oracle.at(parent));  // an independent copy
        }
        break;
      }
      case 3: {  // truncate (mostly within the rollback reserve)
        const auto id = pick(a);
        const std::size_t len = oracle.at(id).length(0), back = b % 2 ? b % 6 : b;
        both(id, [&](Cache& c) { c.truncate(len > back ? len - back : 0); });
        break;
      }
      case 4: {  // snapshot of one sequence restored into another
        const auto from = pick(a), to = pick(b);
        const auto bytes = snapshot_bytes(pool.sequence(from));
        check(bytes == snapshot_bytes(oracle.at(from)), "snapshot differs from the oracle's");
        both(to, [&](Cache& c) { restore(c, bytes); });
        break;
      }
      case 5: {  // destroy
        const auto id = pick(a);
        pool.destroy(id);
        oracle.erase(id);
        ids.erase(std::find(ids.begin(), ids.end(), id));
        break;
      }
      case 6: {  // batched attend on every non-empty sequence of a layer
        const std::size_t layer = a % 2, qd = kShape.n_q_heads * kShape.head_dim;
        std::vector<CachePool::SequenceId> batch;
        for (auto id : ids)
          if (oracle.at(id).length(layer) > 0) batch.push_back(id);
        if (batch.empty()) break;  // attend requires q and out (non-null arrays)
        std::vector<float> q = tokens(b, 2), out(batch.size() * qd), ref(qd);
        q.resize(qd);
        std::vector<const float*> qp(batch.size(), q.data());
        std::vector<float*> op_out;
        for (std::size_t i = 0; i < batch.size(); ++i) op_out.push_back(out.data() + i * qd);
        pool.attend(layer, batch, qp.data(), op_out.data());
        for (std::size_t i = 0; i < batch.size(); ++i) {
          oracle.at(batch[i]).attend(layer, q.data(), ref.data());
          for (std::size_t t = 0; t < qd; ++t)
            check(std::fabs(out[i * qd + t] - ref[t]) <= 1e-4f * (1.0f + std::fabs(ref[t])),
                  "batched attend differs from the sequence's own cache");
        }
        break;
      }
    }
    check(pool.committed() <= pool.budget(), "the pool holds more than its budget");
    check(pool.size() == ids.size(), "the pool's sequence count is wrong");
    for (auto id : ids)
      check(snapshot_bytes(pool.sequence(id)) == snapshot_bytes(oracle.at(id)),
            "a pool sequence differs from its independent oracle");
  }
  for (auto id : ids) pool.destroy(id);
  check(pool.committed() == 0, "destroying every sequence did not free every byte");
  return 0;
}

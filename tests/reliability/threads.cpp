// Thread-safety contract of codecs (docs/RELIABILITY.md "Thread safety"): a
// codec object is immutable after construction, so one object -- and every
// copy of an AnyCodec, which shares its state -- can be used by many threads at
// once for encode, decode, prepare_query, scores, accumulate and finish_output.
//
// Several threads hammer one shared codec (and AnyCodec copies of it) and
// must reproduce, bit for bit, what one thread computed alone. Run under
// ThreadSanitizer with the KVQ_TSAN build (docs/RELIABILITY.md) to also catch
// races that happen to produce the right numbers.
#include "kvq_test.hpp"

#include <kvq/codec/registry.hpp>
#include <kvq/core/rng.hpp>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Work {
  std::vector<float> x, q, w;
};
struct Result {
  std::vector<std::byte> bytes;
  std::vector<float> decoded, scores, output;
  bool operator==(const Result& o) const {
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    return bytes == o.bytes && same(decoded, o.decoded) && same(scores, o.scores) && same(output, o.output);
  }
};

Result compute(const kvq::AnyCodec& c, const Work& in) {
  const std::size_t g = c.tokens_per_tile(), d = c.head_dim();
  Result r{std::vector<std::byte>(c.bytes_per_tile()), std::vector<float>(g * d), std::vector<float>(g),
           std::vector<float>(d)};
  std::vector<float> qw(d), acc(d, 0.0f);
  c.encode_tile(in.x.data(), r.bytes.data());
  c.decode_tile(r.bytes.data(), r.decoded.data());
  c.prepare_query(in.q.data(), qw.data());
  c.scores(qw.data(), r.bytes.data(), r.scores.data());
  c.accumulate(acc.data(), in.w.data(), r.bytes.data());
  c.finish_output(acc.data(), r.output.data());
  return r;
}

}  // namespace

TEST_CASE("threads: one shared codec object serves many threads", "[reliability][threads]") {
  constexpr int kThreads = 4, kItems = 6, kRounds = 3;
  for (const auto& info : kvq::codec_table()) {
    INFO(info.name);
    const std::size_t dim = 64;
    const kvq::AnyCodec shared = info.make(dim);
    const std::size_t g = shared.tokens_per_tile();
    kvq::Rng rng(99);
    std::vector<Work> work(kItems);
    for (auto& w : work) {
      w.x.resize(g * dim);
      w.q.resize(dim);
      w.w.resize(g);
      for (auto& v : w.x) v = static_cast<float>(rng.normal());
      for (auto& v : w.q) v = static_cast<float>(rng.normal());
      for (auto& v : w.w) v = static_cast<float>(rng.uniform());
    }
    std::vector<Result> expected;
    for (const auto& w : work) expected.push_back(compute(shared, w));

    std::atomic<int> mismatches{0}, errors{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < kThreads; ++t)
      pool.emplace_back([&, t] {
        // Odd threads use their own AnyCodec copy: copies share the state.
        const kvq::AnyCodec copy = shared;
        const kvq::AnyCodec& c = (t % 2) ? copy : shared;
        try {
          for (int round = 0; round < kRounds; ++round)
            for (int i = 0; i < kItems; ++i) {
              const int item = (i + t) % kItems;  // threads start on different items
              if (!(compute(c, work[item]) == expected[item])) ++mismatches;
            }
        } catch (...) {
          ++errors;
        }
      });
    for (auto& th : pool) th.join();
    CHECK(errors.load() == 0);
    CHECK(mismatches.load() == 0);
  }
}

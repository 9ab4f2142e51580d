#include "kvq_test.hpp"

#include <kvq/cache/stream.hpp>

#include <vector>

using kvq::detail::ByteRun;
using kvq::detail::StreamLayout;

TEST_CASE("stream: ByteRun keeps its contents through front/back moves and compaction", "[cache][stream]") {
  ByteRun run;
  std::vector<std::byte> model;
  unsigned next = 0;
  for (int round = 0; round < 4000; ++round) {
    const std::size_t n = 1 + round % 13;
    std::vector<std::byte> chunk(n);
    for (auto& b : chunk) b = static_cast<std::byte>(next++ & 0xFF);
    run.append(chunk.data(), n);
    model.insert(model.end(), chunk.begin(), chunk.end());
    if (round % 3 == 0 && model.size() > 20) {
      run.pop_front(7);
      model.erase(model.begin(), model.begin() + 7);
    }
    if (round % 17 == 0 && model.size() > 9) {
      std::vector<std::byte> front(model.begin(), model.begin() + 5);
      run.pop_front(5);
      run.push_front(front.data(), 5);  // an undo: the same bytes come back
      run.pop_back(4);
      model.resize(model.size() - 4);
    }
    REQUIRE(run.size() == model.size());
  }
  CHECK(std::equal(model.begin(), model.end(), run.data()));
  std::vector<std::byte> big(10000, std::byte{7});
  run.push_front(big.data(), big.size());  // larger than the consumed prefix
  CHECK(run.size() == model.size() + big.size());
  CHECK(std::equal(model.begin(), model.end(), run.data() + big.size()));
  run.clear();
  CHECK(run.size() == 0);
}

TEST_CASE("stream: StreamLayout count rules", "[cache][stream]") {
  // sinks 2, window 5, policy G=4, one tier below (G=1) after 12 tokens.
  const StreamLayout layout({{1, 8}, {1, 3}, {4, 10}, {1, 8}}, 2, 5, {0, 12, 0, 0});
  std::vector<std::size_t> counts(4, 0);
  for (std::size_t L = 1; L <= 60; ++L) {
    ++counts[layout.entry_segment(counts)];
    while (auto t = layout.next(counts, L)) {
      counts[t->from] -= t->n_tokens;
      counts[t->from - 1] += t->n_tokens;
    }
    CHECK(counts[0] == std::min<std::size_t>(L, 2));
    if (L >= 7) CHECK((counts[3] >= 5 && counts[3] <= 8));  // W .. W+G-1
    CHECK(counts[2] % 4 == 0);
    // Every token of the lower tier has >= 12 newer tokens; the policy tier's
    // oldest unit does not yet (else it would have moved).
    if (counts[1]) CHECK(L - (2 + counts[1]) >= 12);
    if (counts[2] >= 4) CHECK(L < 2 + counts[1] + 4 + 12);
  }
  CHECK(layout.bytes_of(2, 8) == 20);
  CHECK(layout.is_exact(0));
  CHECK(layout.is_exact(3));
  CHECK_FALSE(layout.is_exact(2));
}

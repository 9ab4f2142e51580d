#include "kvq_test.hpp"

#include <kvq/cache/stream.hpp>

#include <vector>

using kvq::detail::StreamLayout;

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

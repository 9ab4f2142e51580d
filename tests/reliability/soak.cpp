// Soak test of the cache: a long stream of tokens through sinks, the recent
// window and two demotion tiers, appended in batches of varying size.
//
// Token t's K and V encode t itself (20 bits, each bit as three +-1 values,
// XORed with a per-head, per-stream mask), a pattern every codec used here
// reproduces to within a few percent, so the stored rows can be read back:
//  (a) memory(): tokens per segment and bytes equal an independent count from
//      the rules in docs/CACHE.md times each codec's bytes_per_tile (exact
//      tokens: head_dim floats), and equal the bytes the segments really hold;
//  (b) decoding every stored row of every segment gives back each position's
//      id exactly once, in order, for K and V of every head: no token lost,
//      duplicated, reordered or mixed up between heads during demotion;
//  (c) attention is finite, and a query matching token t*'s key retrieves
//      t*'s value through every kind of segment (sinks, tiers, window).
// "[.soak]": 1,000,000 tokens, hidden from the default run; the short variant
// runs in every suite so the logic stays exercised.
#include "support/cache_fixtures.hpp"
#include "support/segments.hpp"

#include <kvq/cache/cache.hpp>
#include <kvq/cache/cache_pool.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace {
using namespace kvq;

constexpr std::size_t kDim = 64, kBits = 20, kLayers = 2, kKvHeads = 2, kQHeads = 4;
constexpr std::size_t kSinks = 4, kWindow = 64, kTier1 = 512, kTier2 = 8192;
// Layer 0 is a boundary layer (q8_0); layer 1 uses q4_1. Tiers: q4_1/q4_0, then q2_1.
const char* kSoakSpec = "k=q4_1,v=q4_1,boundary=1+0:q8_0/q8_0,window=64,sinks=4,tier=512:q4_1/q4_0,tier=8192:q2_1/q2_1";

std::uint32_t mask(StreamKind kind, std::size_t layer, std::size_t head) {
  return static_cast<std::uint32_t>((kind == StreamKind::key ? 0x5A5A5u : 0xC3C3Cu) ^ (layer * 0x11111u) ^ (head * 0x0F0F0u)) &
         ((1u << kBits) - 1);
}

// Dims 3j..3j+2 carry bit j as +-1; the last four are +1 markers.
void encode_id(std::uint32_t id, float* row) {
  for (std::size_t j = 0; j < kBits; ++j)
    for (std::size_t r = 0; r < 3; ++r) row[3 * j + r] = (id >> j) & 1 ? 1.0f : -1.0f;
  for (std::size_t i = 3 * kBits; i < kDim; ++i) row[i] = 1.0f;
}

// The id a decoded (or attended) row carries; `clean` is false when any
// value is not within `tol` of +-1 (or a bit's three votes disagree).
std::uint32_t decode_id(const float* row, float tol, bool& clean) {
  std::uint32_t id = 0;
  for (std::size_t j = 0; j < kBits; ++j) {
    int votes = 0;
    for (std::size_t r = 0; r < 3; ++r) {
      const float x = row[3 * j + r];
      if (!(std::fabs(std::fabs(x) - 1.0f) <= tol)) clean = false;
      votes += x > 0 ? 1 : -1;
    }
    if (votes == 1 || votes == -1) clean = false;
    if (votes > 0) id |= 1u << j;
  }
  for (std::size_t i = 3 * kBits; i < kDim; ++i)
    if (!(std::fabs(row[i] - 1.0f) <= tol)) clean = false;
  return id;
}

// Tokens per segment (sinks, tier 2, tier 1, policy, window) after `length`
// appends, from the rules: row codecs only, so every threshold is exact.
std::vector<std::size_t> expected_counts(std::size_t length) {
  const std::size_t sinks = std::min(length, kSinks), rest = length - sinks;  // rest: ages 0..rest-1
  auto ages = [&](std::size_t lo, std::size_t hi) { return std::min(rest, hi) - std::min(rest, lo); };
  return {sinks, ages(kTier2, rest), ages(kTier1, kTier2), ages(kWindow, kTier1), ages(0, kWindow)};
}

// Codec names per segment, as the spec above assigns them.
std::vector<std::string> segment_codecs(std::size_t layer, StreamKind kind) {
  const bool k = kind == StreamKind::key;
  const std::string policy = layer == 0 ? "q8_0" : "q4_1";
  return {"f32", "q2_1", k ? "q4_1" : "q4_0", policy, "f32"};
}

const ModelShape kSoakShape = ModelShape::dense(kLayers, kQHeads, kKvHeads, kDim, 1 << kBits);

struct Soak {
  const ModelShape& shape = kSoakShape;
  Cache& cache;
  // A forked sequence's own tokens carry their position XOR its salt, from
  // the fork point on: (first position, salt), ascending.
  std::vector<std::pair<std::size_t, std::uint32_t>> salts{};

  std::uint32_t id_of(std::size_t position) const {
    std::uint32_t salt = 0;
    for (const auto& [from, s] : salts)
      if (position >= from) salt = s;
    return static_cast<std::uint32_t>(position) ^ salt;
  }

  void append_batch(std::size_t first, std::size_t n) {
    std::vector<float> k(n * kKvHeads * kDim), v(k.size());
    for (std::size_t layer = 0; layer < kLayers; ++layer) {
      for (std::size_t t = 0; t < n; ++t)
        for (std::size_t h = 0; h < kKvHeads; ++h) {
          const auto id = id_of(first + t);
          encode_id(id ^ mask(StreamKind::key, layer, h), k.data() + (t * kKvHeads + h) * kDim);
          encode_id(id ^ mask(StreamKind::value, layer, h), v.data() + (t * kKvHeads + h) * kDim);
        }
      cache.append(layer, n, k.data(), v.data());
    }
  }

  // (a): counts and bytes, three ways.
  void check_memory(std::size_t length) const {
    const auto counts = expected_counts(length);
    MemoryUse total;
    for (std::size_t layer = 0; layer < kLayers; ++layer) {
      std::size_t exact = 0, compressed = 0, held = 0;
      for (StreamKind kind : {StreamKind::key, StreamKind::value}) {
        const auto names = segment_codecs(layer, kind);
        for (std::size_t h = 0; h < kKvHeads; ++h) {
          const auto segs = kvq::test::segments_of(cache, layer, kind, h);
          REQUIRE(segs.size() == counts.size());
          for (std::size_t j = 0; j < segs.size(); ++j) {
            INFO("layer " << layer << " segment " << j << " length " << length);
            REQUIRE(segs[j].codec->name() == names[j]);
            REQUIRE(segs[j].n_tokens == counts[j]);
            held += segs[j].bytes.size();
          }
        }
        for (std::size_t j = 0; j < counts.size(); ++j) {
          const bool is_exact = j == 0 || j + 1 == counts.size();
          const std::size_t bytes = counts[j] * kKvHeads *
                                    (is_exact ? kDim * sizeof(float) : make_codec(names[j], kDim).bytes_per_tile());
          (is_exact ? exact : compressed) += bytes;
        }
      }
      const MemoryUse m = cache.memory(layer);
      REQUIRE(m.tokens == length);
      REQUIRE(m.values == 2 * length * kKvHeads * kDim);
      REQUIRE(m.exact_bytes == exact);
      REQUIRE(m.compressed_bytes == compressed);
      REQUIRE(m.reserve_bytes == 0);
      REQUIRE(m.total_bytes() == held);
      total += m;
    }
    REQUIRE(cache.memory().total == total);
    REQUIRE(cache.bytes_used() == total.total_bytes());
  }

  // (b): every stored row decodes to its own position's id.
  void check_rows(std::size_t length) const {
    std::vector<float> row(kDim);
    std::size_t bad = 0;
    for (std::size_t layer = 0; layer < kLayers; ++layer)
      for (StreamKind kind : {StreamKind::key, StreamKind::value})
        for (std::size_t h = 0; h < kKvHeads; ++h) {
          std::size_t position = 0;
          for (const auto& s : cache.segments(layer, kind, h)) {  // page by page: no copy
            REQUIRE(s.first_position == position);
            const std::size_t bpt = s.codec->bytes_per_tile();
            for (std::size_t t = 0; t < s.n_tokens; ++t, ++position) {
              s.codec->decode_tile(s.bytes.data() + t * bpt, row.data());
              bool clean = true;
              const std::uint32_t id = decode_id(row.data(), 0.25f, clean) ^ mask(kind, layer, h);
              if (!clean || id != id_of(position)) ++bad;
            }
          }
          REQUIRE(position == length);
        }
    REQUIRE(bad == 0);
  }

  // (c): finite attention; a key-matching query retrieves that token's value.
  void check_attention(std::size_t length, Rng& rng) const {
    std::vector<float> q(kQHeads * kDim), out(q.size());
    for (auto& x : q) x = static_cast<float>(rng.normal());
    // Sinks, the oldest tier, the tier boundaries, the newest compressed token, the window.
    const std::size_t probes[] = {0, kSinks - 1, length / 3, length - kTier2 - 1, length - kTier1,
                                  length - kWindow - 1, length - kWindow, length - 1};
    for (std::size_t layer = 0; layer < kLayers; ++layer) {
      cache.attend(layer, q.data(), out.data());
      REQUIRE(std::all_of(out.begin(), out.end(), [](float x) { return std::isfinite(x); }));
      for (std::size_t target : probes) {
        if (target >= length) continue;  // early checkpoints: not every probe exists yet
        for (std::size_t qh = 0; qh < kQHeads; ++qh)
          encode_id(id_of(target) ^ mask(StreamKind::key, layer, qh / (kQHeads / kKvHeads)),
                    q.data() + qh * kDim);
        // Scale 4: the match outscores a key one bit away by >= 4 * 6 * (1 - 2^-7).
        cache.attend(layer, q.data(), out.data(), 4.0f);
        for (std::size_t qh = 0; qh < kQHeads; ++qh) {
          bool clean = true;
          const std::uint32_t id =
              decode_id(out.data() + qh * kDim, 0.25f, clean) ^ mask(StreamKind::value, layer, qh / (kQHeads / kKvHeads));
          INFO("layer " << layer << " q head " << qh << " target " << target << " length " << length);
          REQUIRE(clean);
          REQUIRE(id == id_of(target));
        }
      }
    }
  }
};

// Appends to `s` from `length` up to `until`, checking as it goes.
void grow(Soak& s, std::size_t& length, std::size_t until, std::size_t checkpoint, Rng& rng) {
  std::size_t next_check = (length / checkpoint + 1) * checkpoint;
  while (length < until) {
    // Batches of 1..2048 tokens: thresholds are crossed inside batches and at their edges.
    const std::size_t n = std::min<std::size_t>(until - length, 1 + rng.next_u64() % 2048);
    s.append_batch(length, n);
    length += n;
    s.check_memory(length);
    if (length >= next_check || length == until) {
      s.check_attention(length, rng);
      s.check_rows(length);
      next_check += checkpoint;
    }
  }
  REQUIRE(s.cache.memory() == plan_memory(s.shape, s.cache.spec(), length));
}

void soak(std::size_t n_tokens, std::size_t checkpoint) {
  Cache cache(kSoakShape, CacheSpec::parse(kSoakSpec));
  Soak s{kSoakShape, cache};
  Rng rng(2024);
  std::size_t length = 0;
  grow(s, length, n_tokens, checkpoint, rng);
}

// Four sequences on one budget: a root grown to n/4 and forked; root and
// fork grow to n/2; the fork is forked again and the root once more; all four
// grow to 3n/4 (each fork's own tokens carry a salt). Every sequence passes
// every check at every checkpoint, though they share their prefixes' pages
// and demote them independently; shared pages are held once;
// then a fifth sequence grows until the budget refuses it, which changes none
// of the four.
void pooled_soak(std::size_t n, std::size_t checkpoint) {
  const CacheSpec spec = CacheSpec::parse(kSoakSpec);
  // Room for four unshared caches at 3n/4 tokens plus a page per segment and head each.
  const std::size_t budget = 4 * (plan_memory(kSoakShape, spec, 3 * n / 4).total.total_bytes() + (std::size_t{2} << 20));
  CachePool pool(kSoakShape, spec, budget);
  Rng rng(77);
  struct Seq {
    CachePool::SequenceId id;
    std::unique_ptr<Soak> soak;
    std::size_t length;
  };
  std::vector<Seq> seqs;
  const auto add = [&](CachePool::SequenceId id, const Soak* parent, std::size_t length, std::uint32_t salt) {
    auto s = std::make_unique<Soak>(Soak{kSoakShape, pool.sequence(id)});
    if (parent) s->salts = parent->salts;
    if (salt) s->salts.emplace_back(length, salt);
    seqs.push_back({id, std::move(s), length});
  };
  add(pool.create(), nullptr, 0, 0);
  grow(*seqs[0].soak, seqs[0].length, n / 4, checkpoint, rng);
  add(pool.fork(seqs[0].id), seqs[0].soak.get(), seqs[0].length, 0x5A5A5u);
  for (auto& q : seqs) grow(*q.soak, q.length, n / 2, checkpoint, rng);
  add(pool.fork(seqs[1].id), seqs[1].soak.get(), seqs[1].length, 0x33333u);
  add(pool.fork(seqs[0].id), seqs[0].soak.get(), seqs[0].length, 0x0F0F0u);
  for (auto& q : seqs) {
    grow(*q.soak, q.length, 3 * n / 4, checkpoint, rng);
    REQUIRE(pool.committed() <= pool.budget());
  }
  std::size_t held = 0;
  for (const auto& q : seqs) {
    q.soak->check_rows(q.length);  // the later growth of the others changed nothing
    held += pool.sequence(q.id).capacity_bytes();
  }
  CHECK(pool.committed() < held);  // shared pages are held once

  const auto filler = pool.create();
  Soak f{kSoakShape, pool.sequence(filler)};
  std::size_t length = 0;
  bool refused = false;
  while (!refused && length + 2048 <= kSoakShape.max_context) {
    try {
      f.append_batch(length, 2048);
      length += 2048;
    } catch (const Error& e) {
      REQUIRE(e.code() == Errc::budget_exceeded);
      refused = true;
    }
    REQUIRE(pool.committed() <= pool.budget());
  }
  REQUIRE(refused);
  for (auto& q : seqs) {
    q.soak->check_memory(q.length);
    q.soak->check_rows(q.length);
  }
}
}  // namespace

TEST_CASE("soak: 1M tokens through window, sinks and two tiers", "[.soak]") {
  const auto start = std::chrono::steady_clock::now();
  soak(1'000'000, 100'000);
  WARN("1M-token soak took "
       << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s");
}

TEST_CASE("soak: four forked sequences sharing a budget, 1.05M tokens appended in all", "[.soak]") {
  const auto start = std::chrono::steady_clock::now();
  pooled_soak(600'000, 150'000);
  WARN("pooled soak took " << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s");
}

TEST_CASE("soak (short): forked sequences sharing a budget", "[reliability][pool]") {
#ifdef KVQ_SANITIZED_BUILD
  pooled_soak(12'000, 6'000);
#else
  pooled_soak(40'000, 10'000);
#endif
}

TEST_CASE("soak (short): tokens through window, sinks and two tiers", "[reliability][cache]") {
#ifdef KVQ_SANITIZED_BUILD
  soak(12'000, 4'000);
#else
  soak(50'000, 10'000);
#endif
}

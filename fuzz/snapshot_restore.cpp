// Fuzz target: kvq::restore of arbitrary bytes into small caches
// (snapshot_configs.hpp), then use of whatever it accepted.
//
// Input: [control byte][snapshot bytes...]. Control bits 0-1 pick the cache
// configuration; bit 7 set keeps the snapshot's checksum as given, clear
// (the usual case) rewrites it to match, so mutations reach the parser instead
// of stopping at the checksum; bits 2-6 pick a rollback position below.
//
// Oracle (docs/RELIABILITY.md): restore returns or throws kvq::Error with
// corrupt_data and then leaves the target untouched; run with
// -rss_limit_mb=512 -malloc_limit_mb=256, so a hostile count cannot make it
// allocate beyond what the input justifies. When it accepts the bytes:
//  - saving again gives the same bytes (the kvq version fields aside, which
//    restore ignores), and restoring those gives the same snapshot again;
//  - every stream's segments cover positions 0..length-1 in order, hold
//    n/G whole tiles, and memory() counts exactly the bytes the segments hold;
//  - attention with a bounded query is finite on every non-empty layer;
//  - appending a valid token and rolling it back is exact when the rollback
//    floor allows it, and a deeper rollback plus appends keeps the cache
//    consistent (demotions of restored tiles never fail).
#include "fuzz_support.hpp"
#include "snapshot_configs.hpp"

#include <algorithm>
#include <span>

namespace {
using namespace kvq;
using fuzz::check;

std::vector<std::byte> with_checksum(std::vector<std::byte> b) {
  if (b.size() >= 8) bits::store_u64(b.data() + b.size() - 8, detail::fnv1a64(b.data(), b.size() - 8));
  return b;
}

// The snapshot without its kvq version fields (bytes 12..23) and checksum.
std::vector<std::byte> comparable(const std::vector<std::byte>& b) {
  std::vector<std::byte> c(b.begin(), b.begin() + 12);
  c.insert(c.end(), b.begin() + 24, b.end() - 8);
  return c;
}

// Segments, in order, per layer/stream/head: (first position, tokens, bytes).
using Layout = std::vector<std::tuple<std::size_t, std::size_t, std::vector<std::byte>>>;

Layout check_segments(const Cache& c) {
  const ModelShape& s = c.shape();
  Layout all;
  for (std::size_t o = 0; o < s.n_kv_layers(); ++o) {
    const std::size_t layer = s.kv_layer(o), length = c.length(layer);
    check(length <= s.max_context, "restored layer longer than max_context");
    std::size_t layer_bytes = 0;
    for (StreamKind kind : {StreamKind::key, StreamKind::value})
      for (std::size_t h = 0; h < s.n_kv_heads; ++h) {
        std::size_t next = 0, segment = 0;
        bool first = true;
        for (const SegmentView& v : c.segments(layer, kind, h)) {
          check(v.first_position == next, "segments are not contiguous");
          check(v.n_tokens % v.codec->tokens_per_tile() == 0, "a segment holds a partial tile");
          check(v.bytes.size() == v.n_tokens / v.codec->tokens_per_tile() * v.codec->bytes_per_tile(),
                "a segment's bytes do not match its token count");
          next += v.n_tokens;
          layer_bytes += v.bytes.size();
          // One entry per segment (views are pages): a layout is compared by content, not by page cuts.
          if (v.segment != segment || first) {
            all.emplace_back(v.first_position, 0, std::vector<std::byte>{});
            segment = v.segment;
            first = false;
          }
          std::get<1>(all.back()) += v.n_tokens;
          std::get<2>(all.back()).insert(std::get<2>(all.back()).end(), v.bytes.begin(), v.bytes.end());
        }
        check(next == length, "segments do not sum to the layer length");
      }
    const MemoryUse m = c.memory(layer);
    check(m.tokens == length, "memory() token count differs from length()");
    check(m.exact_bytes + m.compressed_bytes == layer_bytes, "memory() differs from the bytes the segments hold");
  }
  return all;
}

void check_attention(const Cache& c) {
  const ModelShape& s = c.shape();
  std::vector<float> q(s.n_q_heads * s.head_dim), out(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>(int(i * 7 % 13) - 6) / 6.0f;
  for (std::size_t o = 0; o < s.n_kv_layers(); ++o) {
    const std::size_t layer = s.kv_layer(o);
    if (c.length(layer) == 0) continue;
    c.attend(layer, q.data(), out.data());
    check(fuzz::all_finite(out), "attention on a restored cache is not finite");
  }
}

// Appends one token to the longest layers and rolls it back; exact whenever
// the floor allows, as documented for truncate().
void check_rollback(Cache& c) {
  const ModelShape& s = c.shape();
  std::size_t longest = 0;
  for (std::size_t o = 0; o < s.n_kv_layers(); ++o) longest = std::max(longest, c.length(s.kv_layer(o)));
  if (longest >= s.max_context) return;
  const Layout before = check_segments(c);
  bool exact = true;
  for (std::size_t o = 0; o < s.n_kv_layers(); ++o) {
    const std::size_t layer = s.kv_layer(o);
    if (c.length(layer) != longest) continue;
    const auto k = fuzz::snapshot_token(s, longest), v = fuzz::snapshot_token(s, longest, -1.0f);
    c.append(layer, k.data(), v.data());
    exact = exact && longest >= c.exact_rollback_floor(layer);
  }
  check_attention(c);
  c.truncate(longest);
  check(!exact || check_segments(c) == before, "rollback within the floor is not exact on a restored cache");
}

// A rollback to `p` (possibly below the floor: decodes a straddling tile),
// then appends up to max_context, demoting restored tiles on the way.
void check_deep_rollback(Cache& c, std::size_t p) {
  const ModelShape& s = c.shape();
  c.truncate(p);
  check_segments(c);
  for (std::size_t o = 0; o < s.n_kv_layers(); ++o) {
    const std::size_t layer = s.kv_layer(o);
    for (std::size_t t = c.length(layer); t < s.max_context; ++t) {
      const auto k = fuzz::snapshot_token(s, t), v = fuzz::snapshot_token(s, t, 0.25f);
      c.append(layer, k.data(), v.data());
    }
  }
  check_segments(c);
  check_attention(c);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(data + 1),
                               reinterpret_cast<const std::byte*>(data + size));
  if (!(control & 0x80)) bytes = with_checksum(std::move(bytes));

  Cache cache = fuzz::make_snapshot_cache(control & 3);
  fuzz::fill_snapshot_cache(cache, 3);  // a non-empty target: a refusal must leave it untouched
  const auto untouched = snapshot_bytes(cache);
  try {
    restore(cache, std::span<const std::byte>(bytes));
  } catch (const Error& e) {
    check(e.code() == Errc::corrupt_data, "restore threw " + std::string(to_string(e.code())));
    check(snapshot_bytes(cache) == untouched, "a refused restore changed the target");
    return 0;
  }

  const auto saved = snapshot_bytes(cache);
  check(comparable(saved) == comparable(bytes), "save after restore differs from the restored bytes");
  Cache again = fuzz::make_snapshot_cache(control & 3);
  restore(again, std::span<const std::byte>(saved));
  check(snapshot_bytes(again) == saved, "restore(save(restore(x))) differs");

  check_segments(cache);
  check_attention(cache);
  check_rollback(cache);
  std::size_t longest = 0;
  for (std::size_t o = 0; o < cache.shape().n_kv_layers(); ++o)
    longest = std::max(longest, cache.length(cache.shape().kv_layer(o)));
  check_deep_rollback(cache, longest * ((control >> 2) & 31) / 32);
  return 0;
}

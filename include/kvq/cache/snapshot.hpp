// Snapshots: save a cache to a byte stream and restore it bit-identically.
//
// An engine saves a session (a long system prompt, a paused chat) and loads it
// later, possibly from a file it did not write. Restore therefore trusts
// nothing: it reads the whole stream, checks the checksum, parses into a fresh
// cache while checking every count against the bytes present (so a hostile
// header cannot trigger a huge allocation), every codec name and the whole
// configuration against the target, decodes every stored tile to check it is
// finite (a later demotion re-encodes it and must not fail half-way) and
// every exact token to lie in the input domain (norm <= 65504, as append
// requires; else attention could overflow), and swaps the result in only at
// the end.
// Any failure is Errc::corrupt_data and leaves the target untouched; so does
// Errc::budget_exceeded, when the target is a CachePool sequence whose pool
// cannot hold the restored cache beside the one it replaces. The byte
// layout is in docs/CACHE.md; all integers are little-endian.
#pragma once

#include <kvq/cache/cache.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/version.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <istream>
#include <iterator>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace kvq {

inline constexpr std::string_view snapshot_magic = "KVQCACHE";
// Version 2 adds each layer's heavy hitters; caches without them (heavy=0)
// write version 1, byte for byte as before.
inline constexpr std::uint32_t snapshot_format_version = 2;

namespace detail {

inline std::uint64_t fnv1a64(const std::byte* p, std::size_t n) noexcept {
  std::uint64_t h = 14695981039346656037ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<std::uint8_t>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}

class SnapshotWriter {
 public:
  void u32(std::uint32_t v) { bits::store_u32(grow(4), v); }
  void u64(std::uint64_t v) { bits::store_u64(grow(8), v); }
  void bytes(const std::byte* p, std::size_t n) {
    if (n) std::memcpy(grow(n), p, n);
  }
  void str(std::string_view s) {
    u64(s.size());
    bytes(reinterpret_cast<const std::byte*>(s.data()), s.size());
  }
  std::vector<std::byte> buf;

 private:
  std::byte* grow(std::size_t n) {
    buf.resize(buf.size() + n);
    return buf.data() + buf.size() - n;
  }
};

class SnapshotReader {
 public:
  SnapshotReader(const std::byte* p, std::size_t n) : p_(p), n_(n) {}
  [[noreturn]] static void corrupt(const std::string& why) { fail(Errc::corrupt_data, "restore: " + why); }
  std::size_t remaining() const noexcept { return n_ - pos_; }
  const std::byte* take(std::size_t n, const char* what) {
    if (n > remaining()) corrupt(std::string("truncated while reading ") + what);
    pos_ += n;
    return p_ + pos_ - n;
  }
  std::uint32_t u32(const char* what) { return bits::load_u32(take(4, what)); }
  std::uint64_t u64(const char* what) { return bits::load_u64(take(8, what)); }
  std::string str(const char* what) {
    const std::uint64_t n = u64(what);
    const std::byte* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), n);
  }

 private:
  const std::byte* p_;
  std::size_t n_, pos_ = 0;
};

struct SnapshotIO {
  static void write_shape(SnapshotWriter& w, const ModelShape& s) {
    w.u64(s.n_layers);
    w.u64(s.kv_layers.size());
    for (auto l : s.kv_layers) w.u64(l);
    w.u64(s.n_q_heads);
    w.u64(s.n_kv_heads);
    w.u64(s.head_dim);
    w.u64(s.max_context);
  }

  static std::vector<std::byte> save(const Cache& c) {
    SnapshotWriter w;
    w.bytes(reinterpret_cast<const std::byte*>(snapshot_magic.data()), snapshot_magic.size());
    w.u32(c.spec_.heavy ? 2 : 1);
    w.u32(version_major);
    w.u32(version_minor);
    w.u32(version_patch);
    write_shape(w, c.shape_);
    w.str(c.spec_.to_string());
    for (const auto& L : c.layers_) {
      w.u64(L.length);
      for (const Stream* s : {&L.k, &L.v}) {
        w.u64(s->floor);
        w.u64(s->counts.size());
        for (std::size_t j = 0; j < s->counts.size(); ++j) {
          w.str(s->codecs[j].name());
          w.u64(s->counts[j]);
          w.u64(s->layout.bytes_of(j, s->counts[j]));
          for (const auto& run : s->data[j])
            run.for_each_page([&](const std::byte* tiles, std::size_t nt) { w.bytes(tiles, nt * run.tile_bytes()); });
        }
        w.u64(s->log.size());
        for (const auto& e : s->log) {
          w.u64(e.trigger);
          w.u64(e.from);
          w.u64(e.n_tokens);
          for (const auto& b : e.bytes) w.bytes(b.data(), b.size());
        }
      }
      if (c.spec_.heavy) write_heavy(w, L.heavy, L.length);
    }
    w.u64(fnv1a64(w.buf.data(), w.buf.size()));
    return std::move(w.buf);
  }

  static void read_stream(SnapshotReader& r, Stream& s, std::size_t length, std::size_t sinks, PagePool& pool) {
    const auto& lay = s.layout;
    s.floor = r.u64("rollback floor");
    if (s.floor > length) r.corrupt("rollback floor " + std::to_string(s.floor) + " beyond length " + std::to_string(length));
    if (r.u64("segment count") != lay.n_segments()) r.corrupt("segment count differs from the configuration");
    std::size_t total = 0;
    for (std::size_t j = 0; j < lay.n_segments(); ++j) {
      const std::string name = r.str("codec name");
      if (name != s.codecs[j].name())
        r.corrupt("segment " + std::to_string(j) + " codec '" + name + "', the configuration has '" +
                  std::string(s.codecs[j].name()) + "'");
      const std::uint64_t n = r.u64("token count"), bytes = r.u64("segment bytes");
      const std::size_t g = lay.segment(j).tokens_per_tile;
      if (n > length - total || n % g != 0)
        r.corrupt("segment " + std::to_string(j) + " token count " + std::to_string(n) + " is inconsistent");
      if (bytes != lay.bytes_of(j, n)) r.corrupt("segment " + std::to_string(j) + " byte count mismatch");
      if (j == 0 && n > sinks) r.corrupt("more sink tokens than configured");
      if (bytes * s.n_heads > r.remaining()) r.corrupt("truncated while reading segment bytes");
      std::size_t need = 0;
      for (std::size_t h = 0; h < s.n_heads; ++h) {
        RunCounts fresh = s.data[j][h].empty_counts();
        need += fresh.push_back(n / g, total / g) * s.page_bytes(j);
      }
      Allowance a(pool, need, "restore");
      for (std::size_t h = 0; h < s.n_heads; ++h) {
        const std::byte* p = r.take(bytes, "segment bytes");
        require_valid_tiles(r, s.codecs[j], p, n, lay.is_exact(j));
        s.data[j][h].append(p, n / g, a, total / g);
      }
      s.counts[j] = n;
      total += n;
    }
    if (total != length) r.corrupt("stream holds " + std::to_string(total) + " tokens, layer length " + std::to_string(length));
    if (s.counts[0] < sinks && total != s.counts[0]) r.corrupt("tokens beyond unfilled sinks");
    const std::uint64_t n_log = r.u64("undo log size");
    if (n_log > r.remaining() / 24) r.corrupt("undo log size exceeds the file");
    std::vector<std::size_t> counts = s.counts;  // undone newest first below, to prove each undo is possible
    std::size_t last_trigger = s.floor;
    for (std::uint64_t i = 0; i < n_log; ++i) {
      UndoEntry e;
      e.trigger = r.u64("undo trigger");
      e.from = r.u64("undo segment");
      e.n_tokens = r.u64("undo tokens");
      if (e.trigger < last_trigger || e.trigger > length || e.from < 2 || e.from >= lay.n_segments() ||
          e.n_tokens == 0 || e.n_tokens > length || e.n_tokens % lay.segment(e.from).tokens_per_tile ||
          e.n_tokens % lay.segment(e.from - 1).tokens_per_tile)
        r.corrupt("undo entry " + std::to_string(i) + " is inconsistent");
      last_trigger = e.trigger;
      const std::size_t bytes = lay.bytes_of(e.from, e.n_tokens);
      if (bytes * s.n_heads > r.remaining()) r.corrupt("truncated while reading undo bytes");
      Allowance a(pool, bytes * s.n_heads, "restore");
      s.log_bytes_.add(bytes * s.n_heads, a);
      for (std::size_t h = 0; h < s.n_heads; ++h) {
        const std::byte* p = r.take(bytes, "undo bytes");
        require_valid_tiles(r, s.codecs[e.from], p, e.n_tokens, lay.is_exact(e.from));
        e.bytes.emplace_back(p, p + bytes);
      }
      s.log.push_back(std::move(e));
    }
    for (auto it = s.log.rbegin(); it != s.log.rend(); ++it) {
      if (counts[it->from - 1] < it->n_tokens) r.corrupt("undo log does not match the segments");
      counts[it->from - 1] -= it->n_tokens;
      counts[it->from] += it->n_tokens;
    }
  }

  static void write_heavy(SnapshotWriter& w, const HeavyHitters& hh, std::size_t length) {
    w.u64(hh.has_storage() ? 1 : 0);
    if (!hh.has_storage()) return;
    w.u64(hh.base_);
    w.u64(hh.pend_);
    const std::size_t bt = hh.bt_;
    for (const auto& h : hh.heads_) {
      w.u64(h.pos.size());
      for (std::size_t s = 0; s < h.pos.size(); ++s) {
        w.u64(h.pos[s]);
        w.u32(std::bit_cast<std::uint32_t>(h.mass[s]));
        w.bytes(h.k.data() + s * bt, bt);
        w.bytes(h.v.data() + s * bt, bt);
      }
      for (std::size_t p = hh.base_; p < length; ++p) w.u32(std::bit_cast<std::uint32_t>(h.cand[p - hh.base_]));
      for (std::size_t p = hh.base_; p < hh.pend_; ++p) {
        w.bytes(hh.pending_key(&h - hh.heads_.data(), p), bt);
        w.bytes(hh.pending_value(&h - hh.heads_.data(), p), bt);
      }
    }
  }

  static float read_mass(SnapshotReader& r) {
    const float m = std::bit_cast<float>(r.u32("heavy-hitter mass"));
    if (!(m >= 0.0f) || !std::isfinite(m)) r.corrupt("a heavy-hitter mass is negative or not finite");
    return m;
  }

  static void read_heavy(SnapshotReader& r, HeavyHitters& hh, std::size_t length, PagePool& pool) {
    const std::uint64_t allocated = r.u64("heavy-hitter storage");
    if (allocated > 1) r.corrupt("heavy-hitter storage flag is not 0 or 1");
    if (allocated == 0) {
      if (length) r.corrupt("a layer holding tokens has no heavy-hitter storage");
      return;
    }
    Allowance a(pool, hh.storage_bytes(), "restore");
    hh.allocate(a);
    hh.base_ = r.u64("heavy-hitter frontier");
    hh.pend_ = r.u64("heavy-hitter frontier");
    if (hh.base_ > hh.pend_ || hh.pend_ > length || hh.pend_ - hh.base_ > hh.budget_)
      r.corrupt("heavy-hitter frontiers are inconsistent");
    const std::size_t bt = hh.bt_;
    for (std::size_t head = 0; head < hh.heads_.size(); ++head) {
      auto& h = hh.heads_[head];
      const std::uint64_t n = r.u64("heavy-hitter count");
      if (n > hh.budget_) r.corrupt("more heavy hitters than the budget");
      for (std::uint64_t s = 0; s < n; ++s) {
        const std::uint64_t p = r.u64("heavy-hitter position");
        if (p >= hh.base_ || std::binary_search(h.sorted.begin(), h.sorted.end(), std::uint32_t(p)))
          r.corrupt("a heavy-hitter position is repeated or not yet judged");
        h.pos.push_back(std::uint32_t(p));
        h.sorted.insert(std::upper_bound(h.sorted.begin(), h.sorted.end(), std::uint32_t(p)), std::uint32_t(p));
        h.mass.push_back(read_mass(r));
        for (std::byte* dst : {h.k.data() + s * bt, h.v.data() + s * bt}) {
          const std::byte* src = r.take(bt, "heavy-hitter tile");
          require_valid_tiles(r, *hh.exact_, src, 1, true);
          std::memcpy(dst, src, bt);
        }
      }
      for (std::size_t p = hh.base_; p < length; ++p) h.cand.push_back(read_mass(r));
      for (std::size_t p = hh.base_; p < hh.pend_; ++p)
        for (std::byte* dst : {h.pk.data() + hh.slot(p) * bt, h.pv.data() + hh.slot(p) * bt}) {
          const std::byte* src = r.take(bt, "pending tile");
          require_valid_tiles(r, *hh.exact_, src, 1, true);
          std::memcpy(dst, src, bt);
        }
    }
  }

  // The largest norm an exact (sink or window) token can have: the cache's
  // input domain, plus the f16 window's rounding (2^-11 relative) with margin.
  static constexpr double max_exact_norm = double(Cache::max_vector_norm) * (1.0 + 0x1p-10);

  // Every tile decodes to finite values; exact tokens also lie in the input
  // domain. An exact token append would have refused (e.g. values near
  // FLT_MAX) would make attention overflow to Inf/NaN for ordinary queries;
  // compressed tiles with finite fp16 metadata cannot reach that range.
  static void require_valid_tiles(SnapshotReader& r, const AnyCodec& c, const std::byte* p, std::size_t n,
                                  bool exact) {
    const std::size_t d = c.head_dim();
    std::vector<float> x(d * c.tokens_per_tile());
    for (std::size_t t = 0; t < n / c.tokens_per_tile(); ++t) {
      c.decode_tile(p + t * c.bytes_per_tile(), x.data());
      for (float v : x)
        if (!std::isfinite(v)) r.corrupt("a stored tile of '" + std::string(c.name()) + "' decodes to a non-finite value");
      if (!exact) continue;
      for (std::size_t row = 0; row < c.tokens_per_tile(); ++row) {
        double sq = 0.0;
        for (std::size_t i = 0; i < d; ++i) sq += double(x[row * d + i]) * double(x[row * d + i]);
        if (sq > max_exact_norm * max_exact_norm)
          r.corrupt("an exact token has norm " + std::to_string(std::sqrt(sq)) + " > 65504 (the cache's input domain)");
      }
    }
  }

  static void restore(Cache& target, const std::byte* p, std::size_t n) {
    constexpr std::size_t fixed = 8 + 4 * 4;
    if (n < fixed + 8) SnapshotReader::corrupt("file too short to be a kvq cache snapshot");
    if (std::string_view(reinterpret_cast<const char*>(p), 8) != snapshot_magic)
      SnapshotReader::corrupt("not a kvq cache snapshot (bad magic)");
    if (bits::load_u64(p + n - 8) != fnv1a64(p, n - 8))
      SnapshotReader::corrupt("checksum mismatch (truncated or corrupted file)");
    SnapshotReader r(p, n - 8);
    r.take(8, "magic");
    const std::uint32_t format = r.u32("format version");
    if (format != 1 && format != 2)
      r.corrupt("snapshot format version " + std::to_string(format) + ", this kvq reads 1 and 2");
    r.u32("kvq version");  // informational: the format version decides compatibility
    r.u32("kvq version");
    r.u32("kvq version");
    ModelShape shape;
    shape.n_layers = r.u64("shape");
    const std::uint64_t n_kv = r.u64("shape");
    if (n_kv > r.remaining() / 8) r.corrupt("kv layer list exceeds the file");
    for (std::uint64_t i = 0; i < n_kv; ++i) shape.kv_layers.push_back(r.u64("shape"));
    shape.n_q_heads = r.u64("shape");
    shape.n_kv_heads = r.u64("shape");
    shape.head_dim = r.u64("shape");
    shape.max_context = r.u64("shape");
    if (!(shape == target.shape())) r.corrupt("model shape differs from the target cache's");
    const std::string spec_text = r.str("cache spec");
    if (spec_text != target.spec().to_string())
      r.corrupt("cache spec '" + spec_text + "' differs from the target's '" + target.spec().to_string() + "'");
    if (format != (target.spec().heavy ? 2u : 1u))
      r.corrupt("snapshot format version " + std::to_string(format) + " does not match its spec (heavy hitters: 2)");

    Cache fresh(target.shape(), target.spec(), target.codec_factory(), target.pool_);
    for (auto& L : fresh.layers_) {
      L.length = r.u64("layer length");
      if (L.length > shape.max_context) r.corrupt("layer length " + std::to_string(L.length) + " > max_context");
      read_stream(r, L.k, L.length, target.spec().sinks, *target.pool_);
      read_stream(r, L.v, L.length, target.spec().sinks, *target.pool_);
      if (target.spec().heavy) read_heavy(r, L.heavy, L.length, *target.pool_);
    }
    if (r.remaining() != 0) r.corrupt("trailing bytes after the last layer");
    target.swap(fresh);
  }
};

}  // namespace detail

// The snapshot's bytes (format: docs/CACHE.md).
inline std::vector<std::byte> snapshot_bytes(const Cache& cache) { return detail::SnapshotIO::save(cache); }

inline void save(const Cache& cache, std::ostream& out) {
  const auto bytes = snapshot_bytes(cache);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  detail::require(static_cast<bool>(out), Errc::io_error, "save: writing the snapshot failed");
}

// Replaces `cache`'s contents with the snapshot's; the snapshot must come from
// a cache of the same shape and spec. Errc::corrupt_data leaves `cache` untouched.
inline void restore(Cache& cache, std::istream& in) {
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  detail::require(!in.bad(), Errc::io_error, "restore: reading the snapshot failed");
  detail::SnapshotIO::restore(cache, reinterpret_cast<const std::byte*>(raw.data()), raw.size());
}
inline void restore(Cache& cache, std::span<const std::byte> bytes) {
  detail::SnapshotIO::restore(cache, bytes.data(), bytes.size());
}

}  // namespace kvq

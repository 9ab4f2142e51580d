#include "support/cache_fixtures.hpp"

#include <kvq/cache/snapshot.hpp>

#include <sstream>
#include <string>

using kvq::Cache;
using kvq::CacheSpec;
using kvq::Errc;
using kvq::ModelShape;
using namespace kvq::test;

namespace {
const ModelShape kSnapshotShape = ModelShape::dense(3, 4, 2, 32, 500);
const char* kSnapshotSpec = "k=q4_1,v=q8_0,window=8,sinks=2,tier=40:q2_1/q2_1,rollback=5";

Cache filled(std::size_t n, std::uint64_t seed = 11) {
  Cache c(kSnapshotShape, CacheSpec::parse(kSnapshotSpec));
  kvq::Rng rng(seed);
  for (std::size_t layer = 0; layer < 3; ++layer) {
    const std::size_t len = n + layer * 13;  // layers at different lengths
    const auto k = random_tokens(rng, len, 2, 32), v = random_tokens(rng, len, 2, 32);
    c.append(layer, len, k.data(), v.data());
  }
  return c;
}

std::string bytes_of(const Cache& c) {
  std::ostringstream out;
  kvq::save(c, out);
  return out.str();
}

Errc restore_error(Cache& target, const std::string& bytes) {
  std::istringstream in(bytes);
  return error_code([&] { kvq::restore(target, in); });
}

void refit_checksum(std::string& s) {
  const auto h = kvq::detail::fnv1a64(reinterpret_cast<const std::byte*>(s.data()), s.size() - 8);
  for (int i = 0; i < 8; ++i) s[s.size() - 8 + i] = static_cast<char>(h >> (8 * i));
}
}  // namespace

TEST_CASE("snapshot: save -> restore -> save is bit-identical and attention is equal", "[cache][snapshot]") {
  const Cache a = filled(100);
  const std::string first = bytes_of(a);
  CHECK(first.substr(0, 8) == "KVQCACHE");
  Cache b(kSnapshotShape, CacheSpec::parse(kSnapshotSpec));
  std::istringstream in(first);
  kvq::restore(b, in);
  CHECK(bytes_of(b) == first);
  for (std::size_t layer = 0; layer < 3; ++layer) CHECK(b.length(layer) == a.length(layer));
  kvq::Rng rng(12);
  const auto q = random_tokens(rng, 3, 4, 32);
  std::vector<float> oa(q.size()), ob(q.size());
  a.attend(1, 3, q.data(), oa.data());
  b.attend(1, 3, q.data(), ob.data());
  CHECK(oa == ob);
  // The restored cache keeps behaving identically: append, rollback.
  Cache a2 = filled(100);
  const auto k = random_tokens(rng, 9, 2, 32), v = random_tokens(rng, 9, 2, 32);
  a2.append(0, 9, k.data(), v.data());
  b.append(0, 9, k.data(), v.data());
  a2.truncate(103);
  b.truncate(103);
  CHECK(bytes_of(a2) == bytes_of(b));
  // An empty cache round-trips too.
  Cache e(kSnapshotShape, CacheSpec::parse(kSnapshotSpec)), e2(kSnapshotShape, CacheSpec::parse(kSnapshotSpec));
  std::istringstream ein(bytes_of(e));
  kvq::restore(e2, ein);
  CHECK(bytes_of(e2) == bytes_of(e));
}

TEST_CASE("snapshot: truncated, corrupted and foreign files are refused, target untouched", "[cache][snapshot]") {
  const std::string good = bytes_of(filled(60));
  Cache target = filled(30, 99);
  const std::string before = bytes_of(target);

  // Every truncation (sampled) and every single-byte corruption (sampled).
  for (std::size_t n = 0; n < good.size(); n += 1 + n / 7) {
    INFO("truncated to " << n);
    CHECK(restore_error(target, good.substr(0, n)) == Errc::corrupt_data);
  }
  for (std::size_t i = 0; i < good.size(); i += 1 + i / 5) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x5A);
    INFO("byte " << i << " corrupted");
    CHECK(restore_error(target, bad) == Errc::corrupt_data);
  }
  CHECK(restore_error(target, good + "x") == Errc::corrupt_data);
  CHECK(restore_error(target, std::string(200, '\0')) == Errc::corrupt_data);
  CHECK(restore_error(target, "GGUF" + good.substr(4)) == Errc::corrupt_data);

  // Foreign configurations: another spec, another shape.
  Cache other_spec(kSnapshotShape, CacheSpec::parse("k=q8_0,v=q8_0"));
  CHECK(restore_error(other_spec, good) == Errc::corrupt_data);
  Cache other_shape(ModelShape::dense(3, 4, 2, 32, 501), CacheSpec::parse(kSnapshotSpec));
  CHECK(restore_error(other_shape, good) == Errc::corrupt_data);

  // Hostile fields behind a valid checksum: a future format version and a huge
  // kv-layer count must be refused without a huge allocation.
  std::string version = good;
  version[8] = 2;
  refit_checksum(version);
  CHECK(restore_error(target, version) == Errc::corrupt_data);
  std::string huge = good;
  const std::size_t kv_count_at = 8 + 16 + 8;
  for (int i = 0; i < 8; ++i) huge[kv_count_at + i] = static_cast<char>(0xFF);
  refit_checksum(huge);
  CHECK(restore_error(target, huge) == Errc::corrupt_data);
  // A first-layer length beyond what the segments hold.
  std::string spec_text = CacheSpec::parse(kSnapshotSpec).to_string();
  const std::size_t length_at = good.find(spec_text) + spec_text.size();
  std::string longer = good;
  longer[length_at] = static_cast<char>(longer[length_at] + 1);
  refit_checksum(longer);
  CHECK(restore_error(target, longer) == Errc::corrupt_data);

  // A compressed tile whose fp16 scale is NaN (checksum refitted): refused,
  // because a later demotion would have to re-encode it.
  std::string nan_tile = good;
  const std::string q2_name = std::string("\x04\0\0\0\0\0\0\0", 8) + "q2_1";
  const std::size_t name_at = nan_tile.find(q2_name, length_at);
  REQUIRE(name_at != std::string::npos);
  const std::size_t tile_at = name_at + q2_name.size() + 16;
  REQUIRE(kvq::bits::load_u64(reinterpret_cast<const std::byte*>(nan_tile.data()) + name_at + 12) > 0);
  nan_tile[tile_at] = 0x00;
  nan_tile[tile_at + 1] = 0x7E;
  refit_checksum(nan_tile);
  CHECK(restore_error(target, nan_tile) == Errc::corrupt_data);

  CHECK(bytes_of(target) == before);
  // And the untouched target still restores a good file.
  std::istringstream in(good);
  kvq::restore(target, in);
  CHECK(bytes_of(target) == good);
}

// Regression: restore accepted exact (sink/window) tokens outside the input
// domain, e.g. f32 values near FLT_MAX behind a valid checksum; attention on
// the restored cache then overflowed to Inf/NaN for an ordinary query. append
// refuses such tokens (norm > 65504), and now so does restore, for f32 and f16
// windows alike, while a token at the edge of the domain still round-trips
// (f16 rounding may lift its norm a little above 65504).
TEST_CASE("snapshot: exact tokens outside the input domain are refused", "[cache][snapshot]") {
  const ModelShape shape = ModelShape::dense(1, 2, 1, 32, 64);
  for (const char* spec : {"k=q8_0,v=q8_0,window=4,sinks=1", "k=q4_1,v=q4_1,window=4,precision=f16"}) {
    INFO(spec);
    Cache c(shape, CacheSpec::parse(spec));
    kvq::Rng rng(5);
    auto k = random_tokens(rng, 10, 1, 32), v = random_tokens(rng, 10, 1, 32);
    // The last token at the edge of the domain (norm exactly 65504) is kept.
    auto scale_to = [](float* row, double norm) {
      double sq = 0.0;
      for (int i = 0; i < 32; ++i) sq += double(row[i]) * row[i];
      for (int i = 0; i < 32; ++i) row[i] = static_cast<float>(row[i] * (norm / std::sqrt(sq)));
    };
    scale_to(k.data() + 9 * 32, 65504.0 * (1.0 - 1e-7));
    scale_to(v.data() + 9 * 32, 65504.0 * (1.0 - 1e-7));
    c.append(0, 10, k.data(), v.data());
    const std::string good = bytes_of(c);
    Cache edge(shape, CacheSpec::parse(spec));
    std::istringstream in(good);
    kvq::restore(edge, in);
    CHECK(bytes_of(edge) == good);

    // The same file with the newest K token's stored bytes (found by value; K
    // comes before V) replaced by 3e38 (f32) or 65504 (f16) in every coordinate.
    const bool f16 = std::string(spec).find("f16") != std::string::npos;
    const std::size_t row_bytes = 32 * (f16 ? 2 : 4);
    std::string stored(row_bytes, '\0');
    for (int i = 0; i < 32; ++i) {
      if (f16) {
        kvq::bits::store_u16(reinterpret_cast<std::byte*>(stored.data() + 2 * i), kvq::float_to_half_bits(k[9 * 32 + i]));
      } else {
        kvq::bits::store_f32(reinterpret_cast<std::byte*>(stored.data() + 4 * i), k[9 * 32 + i]);
      }
    }
    const std::size_t at = good.find(stored);
    REQUIRE(at != std::string::npos);
    std::string huge = good;
    for (int i = 0; i < 32; ++i) {
      if (f16) {
        kvq::bits::store_u16(reinterpret_cast<std::byte*>(huge.data() + at + 2 * i), 0x7BFF);  // 65504: norm 65504*sqrt(32)
      } else {
        kvq::bits::store_f32(reinterpret_cast<std::byte*>(huge.data() + at + 4 * i), 3e38f);
      }
    }
    refit_checksum(huge);
    Cache target(shape, CacheSpec::parse(spec));
    CHECK(restore_error(target, huge) == Errc::corrupt_data);
    CHECK(bytes_of(target) == bytes_of(Cache(shape, CacheSpec::parse(spec))));
  }
}

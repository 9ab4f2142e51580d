// Shared helpers of kvq's libFuzzer targets (fuzz/*.cpp): reading structured
// choices from the fuzzer's bytes, picking a codec from the registry, and the
// per-family knowledge the oracles need (where a tile's metadata lives, the
// documented round-trip error bound).
//
// A target picks "which codec, which head_dim" from its first input bytes, so
// one corpus covers every codec in codec_table() and a codec added to the table
// is fuzzed without touching the targets. Families the helpers do not know
// (e.g. turbo before its hooks are written) are still fuzzed for crashes and
// sanitizer reports; only the family-specific oracles are skipped for them.
#pragma once

#include <kvq/codec/registry.hpp>
#include <kvq/core/bits.hpp>
#include <kvq/core/half.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace kvq::fuzz {

// Aborts with a message: libFuzzer records the input as a crash.
[[noreturn]] inline void bug(const std::string& what) {
  std::fprintf(stderr, "kvq fuzz oracle violated: %s\n", what.c_str());
  std::abort();
}
inline void check(bool ok, const std::string& what) {
  if (!ok) bug(what);
}

// Consumes the fuzzer's bytes front to back; reads past the end yield zeros.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  std::uint8_t u8() { return i_ < n_ ? p_[i_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::size_t remaining() const { return n_ - i_; }
  const std::uint8_t* rest() const { return p_ + i_; }

 private:
  const std::uint8_t* p_;
  std::size_t n_, i_ = 0;
};

// Every codec spec the targets exercise: the registry's names plus the tile
// codecs at their smallest tile lengths (cheap tiles, more executions).
inline const std::vector<std::string>& codec_specs() {
  static const std::vector<std::string> specs = [] {
    std::vector<std::string> s;
    for (const auto& info : codec_table()) {
      s.emplace_back(info.name);
      if (info.family == "per-channel") {
        s.push_back(std::string(info.name) + "/g32");
        s.push_back(std::string(info.name) + "/g64");
      }
    }
    return s;
  }();
  return specs;
}

inline std::string_view family_of(std::string_view codec_name) {
  for (const auto& info : codec_table())
    if (info.name == codec_name) return info.family;
  return {};
}

// A codec chosen by two bytes: the spec, and head_dim = 8 * (1 + b % 32)
// (8..256), rounded up to a multiple of 32 when the codec refuses the first.
inline std::optional<AnyCodec> pick_codec(Input& in) {
  const auto& specs = codec_specs();
  const std::string& spec = specs[in.u8() % specs.size()];
  const std::size_t dim = 8 * (1 + in.u8() % 32u);
  for (std::size_t d : {dim, (dim + 31) / 32 * 32}) {
    try {
      return make_codec(spec, d);
    } catch (const Error& e) {
      check(e.code() == Errc::shape_mismatch, "make_codec(" + spec + ") refused a dim with " +
                                                  std::string(to_string(e.code())));
    }
  }
  return std::nullopt;
}

// True if every fp16 metadata field of the tile is finite; nullopt for a
// family whose layout these helpers do not know.
inline std::optional<bool> metadata_finite(const AnyCodec& c, const std::byte* tile) {
  auto finite16 = [](const std::byte* p) { return std::isfinite(half_bits_to_float(bits::load_u16(p))); };
  const std::string_view fam = family_of(c.name());
  if (fam == "uniform") {
    const std::size_t blocks = c.head_dim() / 32, block_bytes = c.bytes_per_tile() / blocks;
    const bool has_min = c.name().ends_with("_1");
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::byte* blk = tile + b * block_bytes;
      if (!finite16(blk) || (has_min && !finite16(blk + 2))) return false;
    }
    return true;
  }
  if (fam == "per-channel") {  // [runs][u][v][Sd][Smin][Md][Mmin]
    const std::byte* h = tile + c.bytes_per_tile() - 8;
    return finite16(h) && finite16(h + 2) && finite16(h + 4) && finite16(h + 6);
  }
  return std::nullopt;
}

inline bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace kvq::fuzz

// Codecs chosen at run time: a type-erased AnyCodec and the table of names.
//
// Engines pick a format from a command line or a config file, and a layer
// schedule may mix formats, so besides the compile-time Codec types there is
// one value type that holds any of them. Name lookup is the single place that
// knows every codec; the `kvq` tool, the schedules and the evaluators use it.
#pragma once
#define KVQ_CODEC_REGISTRY_INCLUDED  // checked by kernels/definitions.hpp

#include <kvq/codec/codec.hpp>
#include <kvq/codec/per_channel.hpp>
#include <kvq/codec/turbo.hpp>
#include <kvq/codec/uniform.hpp>
#include <kvq/core/compiled.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvq {

class AnyCodec {
 public:
  template <Codec C>
  explicit AnyCodec(C codec) : impl_(std::make_shared<Model<C>>(std::move(codec))) {}

  std::string_view name() const noexcept { return impl_->name(); }
  std::size_t head_dim() const noexcept { return impl_->head_dim(); }
  std::size_t tokens_per_tile() const noexcept { return impl_->tokens_per_tile(); }
  std::size_t bytes_per_tile() const noexcept { return impl_->bytes_per_tile(); }
  double bits_per_value() const noexcept {
    return 8.0 * static_cast<double>(bytes_per_tile()) / static_cast<double>(tokens_per_tile() * head_dim());
  }

  void encode_tile(const float* x, std::byte* out) const { impl_->encode_tile(x, out); }
  void decode_tile(const std::byte* in, float* y) const { impl_->decode_tile(in, y); }
  void prepare_query(const float* q, float* q_work) const { impl_->prepare_query(q, q_work); }
  void scores(const float* q_work, const std::byte* tile, float* out) const { impl_->scores(q_work, tile, out); }
  void accumulate(float* acc, const float* w, const std::byte* tile) const { impl_->accumulate(acc, w, tile); }
  void finish_output(const float* acc, float* out) const { impl_->finish_output(acc, out); }

  // The concrete codec, or nullptr if it is not a C: lets the cache and the
  // kernels reach a statically typed fast path.
  template <Codec C>
  const C* get_if() const noexcept {
    auto* m = dynamic_cast<const Model<C>*>(impl_.get());
    return m ? &m->codec : nullptr;
  }

 private:
  struct Concept {
    virtual ~Concept() = default;
    virtual std::string_view name() const noexcept = 0;
    virtual std::size_t head_dim() const noexcept = 0;
    virtual std::size_t tokens_per_tile() const noexcept = 0;
    virtual std::size_t bytes_per_tile() const noexcept = 0;
    virtual void encode_tile(const float*, std::byte*) const = 0;
    virtual void decode_tile(const std::byte*, float*) const = 0;
    virtual void prepare_query(const float*, float*) const = 0;
    virtual void scores(const float*, const std::byte*, float*) const = 0;
    virtual void accumulate(float*, const float*, const std::byte*) const = 0;
    virtual void finish_output(const float*, float*) const = 0;
  };
  template <Codec C>
  struct Model final : Concept {
    explicit Model(C c) : codec(std::move(c)) {}
    std::string_view name() const noexcept override { return C::name; }
    std::size_t head_dim() const noexcept override { return codec.head_dim(); }
    std::size_t tokens_per_tile() const noexcept override { return codec.tokens_per_tile(); }
    std::size_t bytes_per_tile() const noexcept override { return codec.bytes_per_tile(); }
    void encode_tile(const float* x, std::byte* o) const override { codec.encode_tile(x, o); }
    void decode_tile(const std::byte* i, float* y) const override { codec.decode_tile(i, y); }
    void prepare_query(const float* q, float* w) const override { codec.prepare_query(q, w); }
    void scores(const float* q, const std::byte* t, float* o) const override { codec.scores(q, t, o); }
    void accumulate(float* a, const float* w, const std::byte* t) const override { codec.accumulate(a, w, t); }
    void finish_output(const float* a, float* o) const override { codec.finish_output(a, o); }
    C codec;
  };
  std::shared_ptr<const Concept> impl_;
};

struct CodecInfo {
  std::string_view name;
  std::string_view family;
  std::string_view summary;
  std::function<AnyCodec(std::size_t head_dim)> make;
};

// Every codec kvq ships, in the order `kvq codecs` lists them.
const std::vector<CodecInfo>& codec_table();
// Their names, comma-separated.
std::string codec_names();
// The codec called `name` for head_dim; Errc::invalid_argument for an unknown
// name, Errc::shape_mismatch for a head_dim the codec cannot encode. Tile
// codecs accept a tile length suffix: "pc4/g64" is pc4 with G = 64 tokens.
AnyCodec make_codec(std::string_view name, std::size_t head_dim);

// Out of line with KVQ_EXTERN_KERNELS (core/compiled.hpp): constructing every
// codec type is most of what a TU that builds a Cache compiles.
#if KVQ_COMPILED_DEFINITIONS
KVQ_COMPILED_INLINE const std::vector<CodecInfo>& codec_table() {
  static const std::vector<CodecInfo> table = {
      {"q8_0", "uniform", "ggml q8_0: 32 x int8 + fp16 scale", [](std::size_t d) { return AnyCodec(Q8_0(d)); }},
      {"q4_0", "uniform", "ggml q4_0: 32 x 4-bit + fp16 scale", [](std::size_t d) { return AnyCodec(Q4_0(d)); }},
      {"q4_1", "uniform", "ggml q4_1: 32 x 4-bit + fp16 scale and min", [](std::size_t d) { return AnyCodec(Q4_1(d)); }},
      {"q3_1", "uniform", "32 x 3-bit + fp16 scale and min", [](std::size_t d) { return AnyCodec(Q3_1(d)); }},
      {"q2_1", "uniform", "32 x 2-bit + fp16 scale and min", [](std::size_t d) { return AnyCodec(Q2_1(d)); }},
      {"pc4", "per-channel", "K tile of 128 tokens: 4-bit per-channel codes, 8-bit scales/offsets (name/gN: G = N)",
       [](std::size_t d) { return AnyCodec(PC4(d)); }},
      {"pc3", "per-channel", "K tile of 128 tokens: 3-bit per-channel codes, 8-bit scales/offsets (name/gN: G = N)",
       [](std::size_t d) { return AnyCodec(PC3(d)); }},
      {"pc2", "per-channel", "K tile of 128 tokens: 2-bit per-channel codes, 8-bit scales/offsets (name/gN: G = N)",
       [](std::size_t d) { return AnyCodec(PC2(d)); }},
      {"turbo4", "turbo", "rotation + 4-bit Lloyd-Max codebook + fp16 scale", [](std::size_t d) { return AnyCodec(Turbo4(d)); }},
      {"turbo3", "turbo", "rotation + 3-bit Lloyd-Max codebook + fp16 scale", [](std::size_t d) { return AnyCodec(Turbo3(d)); }},
      {"turbo2", "turbo", "rotation + 2-bit Lloyd-Max codebook + fp16 scale", [](std::size_t d) { return AnyCodec(Turbo2(d)); }},
  };
  return table;
}

KVQ_COMPILED_INLINE std::string codec_names() {
  std::string names;
  for (const auto& info : codec_table()) names += (names.empty() ? "" : ", ") + std::string(info.name);
  return names;
}

namespace detail {
// "pc4/g64": a tile codec with a tile length other than its default. Only the
// per-channel family has a tile length; anything else after '/' is refused.
inline AnyCodec make_tiled_codec(std::string_view base, std::string_view option, std::size_t head_dim) {
  const std::string full = std::string(base) + "/" + std::string(option);
  std::size_t g = 0;
  bool ok = option.size() >= 2 && option.size() <= 6 && option[0] == 'g';
  for (std::size_t i = 1; ok && i < option.size(); ++i) {
    ok = option[i] >= '0' && option[i] <= '9';
    g = g * 10 + static_cast<std::size_t>(option[i] - '0');
  }
  if (!ok) fail(Errc::invalid_argument, "codec '" + full + "': expected NAME/gN with N the tile length in tokens");
  if (base == "pc4") return AnyCodec(PC4(head_dim, g));
  if (base == "pc3") return AnyCodec(PC3(head_dim, g));
  if (base == "pc2") return AnyCodec(PC2(head_dim, g));
  fail(Errc::invalid_argument, "codec '" + full + "': only tile codecs (pc4, pc3, pc2) take a /gN tile length");
}
}  // namespace detail

KVQ_COMPILED_INLINE AnyCodec make_codec(std::string_view name, std::size_t head_dim) {
  if (const auto slash = name.find('/'); slash != std::string_view::npos)
    return detail::make_tiled_codec(name.substr(0, slash), name.substr(slash + 1), head_dim);
  for (const auto& info : codec_table())
    if (info.name == name) return info.make(head_dim);
  detail::fail(Errc::invalid_argument,
               "unknown codec '" + std::string(name) + "' (known: " + codec_names() + ")");
}
#endif  // KVQ_COMPILED_DEFINITIONS

}  // namespace kvq

// Highway kernels of the per-channel K tile formats (pc4 / pc3 / pc2).
//
// Compiled once per SIMD target by kvq/kernels/dispatch.hpp (through
// all-inl.h); do not include it directly. The scalar oracle, and the algebra
// these kernels implement, is kvq/reference/per_channel.hpp: a tile holds G
// tokens x D channels, codes channel-major, value = s_c * k[t][c] + m_c.
//
// scores: the scale is folded into the query once per tile and query
// (q'_c = q_c s_c, bias b = sum_c q_c m_c); then for a chunk of 32 tokens the
// kernel walks the channels, broadcasting q'_c and adding q'_c * k[.][c] into
// 32 per-token lanes: vertical FMAs on small integer codes, no horizontal sum
// per token. The chunk's accumulators for up to kMaxGroup queries of a GQA
// group stay in registers, so the codes are decoded once per group.
//
// accumulate: acc_c += s_c * sum_t w_t k[t][c] + m_c * sum_t w_t. Each
// channel's sum over tokens is a dot product of the weights with that
// channel's code run; four channels are reduced together (one transpose tree)
// and finished with their scale and offset. Queries of a group are swept one
// after another over the tile, which is in L1 after the first.
//
// int8 scores (ScoresInt8, contract in reference/int8_query.hpp): the folded
// query q' is quantized to int8 per block of 32 channels once per tile and
// query; then for a chunk of 32 tokens (16 on 128-bit targets) four channels'
// codes are transposed to token-major bytes (two byte and two 16-bit
// interleaves) so that an int8 dot product (vpdpbusd, maddubs, sdot) adds
// 4 channels x 16 tokens per instruction against the 4 query codes broadcast,
// int32 lane = token. Each 32-channel block's integer sums are scaled by
// their query step into f32 accumulators; the interleaves leave tokens in a
// fixed order per target, undone once per chunk at the store.
//
// Tiles are a few KiB to tens of KiB (G = 128, D = 128, 4 bits: 8.4 KiB), so
// a tile is read from memory once per call however many queries there are.

#include <kvq/core/half.hpp>
#include <kvq/reference/int8_query.hpp>   // the int8 scores' rounding and SCALAR loop
#include <kvq/reference/per_channel.hpp>  // tile geometry

#include <hwy/cache_control.h>  // hwy::Prefetch

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(KVQ_KERNELS_PER_CHANNEL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_PER_CHANNEL_INL_H_
#undef KVQ_KERNELS_PER_CHANNEL_INL_H_
#else
#define KVQ_KERNELS_PER_CHANNEL_INL_H_
#endif

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
namespace per_channel {

using namespace row_kernels;  // DF, VF, DU, VU, kLanes, Sum4, ...

inline constexpr std::size_t kChunk = 32;  // tokens per register chunk; G is a multiple of 32
inline constexpr std::size_t kVecsPerChunk = kChunk / kLanes;

// Tokens [first, first + Lanes(d)) of a 2-bit plane: byte j holds tokens j,
// j + q, j + 2q, j + 3q (q = G/4, a multiple of 8) in bit pairs 0..3, so up to
// 8 consecutive tokens share one bit pair.
template <class D>
HWY_INLINE hn::Vec<D> Crumbs(D d, const std::uint8_t* run, std::size_t q, std::size_t first) {
  const hn::Rebind<std::uint8_t, D> d8;
  const auto v = hn::PromoteTo(d, hn::LoadU(d8, run + first % q));
  return hn::And(hn::ShiftRightSame(v, static_cast<int>(2 * (first / q))), hn::Set(d, 3u));
}

// Adds bit 2 of tokens [t, t + kLanes) from a 3-bit run's high plane (after
// the 2-bit plane of G/4 bytes): bit t of the plane is bit 2 of token t.
HWY_INLINE VU AddHighBit(const std::uint8_t* run, std::size_t q, std::size_t t, VU c) {
  const DU du;
  const std::uint8_t* high = run + q + t / 8;
  std::uint32_t word = high[0];
  if constexpr (kLanes > 8) word |= static_cast<std::uint32_t>(high[1]) << 8;
  const auto bit2 = hn::TestBit(hn::Set(du, word), hn::LoadU(du, kBitOfValue + t % 8));
  return hn::Or(c, hn::IfThenElseZero(bit2, hn::Set(du, 4u)));
}

// Codes of tokens [t, t + kLanes) of one channel's run (G codes).
template <unsigned Bits>
HWY_INLINE VU Codes(const std::uint8_t* run, std::size_t g, std::size_t t) {
  const DU du;
  if constexpr (Bits == 4) {
    // Byte j holds token j (low nibble) and token j + G/2 (high nibble); G/2
    // is a multiple of 16, so a vector never straddles the two halves.
    const hn::Rebind<std::uint8_t, DF> du8;
    const std::size_t half = g / 2;
    if (t < half) return hn::And(hn::PromoteTo(du, hn::LoadU(du8, run + t)), hn::Set(du, 0xFu));
    return hn::ShiftRight<4>(hn::PromoteTo(du, hn::LoadU(du8, run + t - half)));
  } else {
    // 2-bit plane (Crumbs); 16 lanes are built from two 8-token halves.
    const std::size_t q = g / 4;
    VU c;
#if HWY_TARGET != HWY_SCALAR
    if constexpr (kLanes == 16) {
      const hn::Half<DU> dh;
      c = hn::Combine(du, Crumbs(dh, run, q, t + 8), Crumbs(dh, run, q, t));
    } else
#endif
    {
      c = Crumbs(du, run, q, t);
    }
    if constexpr (Bits == 3) c = AddHighBit(run, q, t, c);
    return c;
  }
}

// The codes of one run as successive kLanes-token vectors, tracking the
// plane position instead of dividing by G/4 per vector (Codes() divides; in
// the scores chunks that is hoisted out of the channel loop, here it is not).
template <unsigned Bits>
class CodeStream {
 public:
  HWY_INLINE CodeStream(const std::uint8_t* run, std::size_t g) : run_(run), g_(g), q_(g / 4) {}

  HWY_INLINE VU Next() {
    if constexpr (Bits == 4) {
      const VU c = Codes<4>(run_, g_, t_);  // no division: one compare against G/2
      t_ += kLanes;
      return c;
    } else {
      const DU du;
      VU c;
#if HWY_TARGET != HWY_SCALAR
      if constexpr (kLanes == 16) {
        const hn::Half<DU> dh;
        const auto lo = Half8(dh);
        c = hn::Combine(du, Half8(dh), lo);
      } else
#endif
      {
        c = Half8(du);
      }
      if constexpr (Bits == 3) c = AddHighBit(run_, q_, t_, c);
      t_ += kLanes;
      return c;
    }
  }

 private:
  // The next Lanes(d) <= 8 tokens of the 2-bit plane (never straddling a bit
  // pair: q is a multiple of 8).
  template <class D>
  HWY_INLINE hn::Vec<D> Half8(D d) {
    const hn::Rebind<std::uint8_t, D> d8;
    const auto v = hn::PromoteTo(d, hn::LoadU(d8, run_ + offset_));
    const auto c = hn::And(hn::ShiftRightSame(v, shift_), hn::Set(d, 3u));
    offset_ += hn::Lanes(d);
    if (offset_ == q_) {
      offset_ = 0;
      shift_ += 2;
    }
    return c;
  }

  const std::uint8_t* run_;
  std::size_t g_, q_, t_ = 0, offset_ = 0;
  int shift_ = 0;
};

// Decoded metadata of a tile: per-channel scale and offset, exactly as the
// reference computes them (fp16 x 8-bit products are exact in float).
HWY_INLINE void ReadMeta(const std::uint8_t* meta, std::size_t d, float* scale, float* offset) {
  const std::uint8_t* u = meta;
  const std::uint8_t* v = meta + d;
  const float sd = LoadHalfScalar(v + d), smin = LoadHalfScalar(v + d + 2);
  const float md = LoadHalfScalar(v + d + 4), mmin = LoadHalfScalar(v + d + 6);
  for (std::size_t c = 0; c < d; ++c) {
    scale[c] = sd * static_cast<float>(u[c]) + smin;
    offset[c] = md * static_cast<float>(v[c]) + mmin;
  }
}

// The query folded with a tile's scales, qs[c] = q[c] * scale[c]; returns the
// offsets' term sum_c q[c] * offset[c] (vector partial sums: not the
// reference's order, within float rounding of it). d is a multiple of 8.
HWY_INLINE float FoldQuery(const float* HWY_RESTRICT q, const float* HWY_RESTRICT scale,
                           const float* HWY_RESTRICT offset, std::size_t d, float* HWY_RESTRICT qs) {
  const hn::CappedTag<float, 8> d8;
  auto bias = hn::Zero(d8);
  for (std::size_t c = 0; c < d; c += hn::Lanes(d8)) {
    const auto qc = hn::LoadU(d8, q + c);
    hn::StoreU(hn::Mul(qc, hn::LoadU(d8, scale + c)), d8, qs + c);
    bias = hn::MulAdd(qc, hn::LoadU(d8, offset + c), bias);
  }
  return hn::GetLane(hn::SumOfLanes(d8, bias));
}

// out[g * out_stride + t] for one chunk of 32 tokens and G queries, from the
// folded queries qs[g * d + c] and biases.
template <unsigned Bits, std::size_t G>
HWY_INLINE void ScoresChunk(const std::uint8_t* HWY_RESTRICT codes, std::size_t run_bytes, std::size_t g_tokens,
                            std::size_t d, std::size_t t0, const float* HWY_RESTRICT qs, const float* bias,
                            float* HWY_RESTRICT out, std::size_t out_stride) {
  const DF df;
  VF acc[G][kVecsPerChunk];
  KVQ_UNROLL
  for (std::size_t g = 0; g < G; ++g)
    KVQ_UNROLL
    for (std::size_t v = 0; v < kVecsPerChunk; ++v) acc[g][v] = hn::Set(df, bias[g]);
  for (std::size_t c = 0; c < d; ++c) {
    const std::uint8_t* run = codes + c * run_bytes;
    VF x[kVecsPerChunk];
    KVQ_UNROLL
    for (std::size_t v = 0; v < kVecsPerChunk; ++v) x[v] = CodesToFloat(Codes<Bits>(run, g_tokens, t0 + v * kLanes));
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      const VF qc = hn::Set(df, qs[g * d + c]);
      KVQ_UNROLL
      for (std::size_t v = 0; v < kVecsPerChunk; ++v) acc[g][v] = hn::MulAdd(qc, x[v], acc[g][v]);
    }
  }
  KVQ_UNROLL
  for (std::size_t g = 0; g < G; ++g)
    KVQ_UNROLL
    for (std::size_t v = 0; v < kVecsPerChunk; ++v) hn::StoreU(acc[g][v], df, out + g * out_stride + t0 + v * kLanes);
}

// The tile loop of both score kernels: per tile, prefetch the next one,
// decode the metadata and fold every query (qs[g * d + c], bias[g]); then
// fn(tile, out + i * G, qs, bias) scores it. `scratch` starts with
// 2 * d + n_q * (d + 1) floats for that.
template <unsigned Bits, class Fn>
HWY_INLINE void ForEachFoldedTile(const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* tiles_in,
                                  std::size_t n_tiles, std::size_t d, std::size_t g_tokens, float* scratch,
                                  float* out, Fn&& fn) {
  const auto* tiles = reinterpret_cast<const std::uint8_t*>(tiles_in);
  const std::size_t run_bytes = kvq::reference::per_channel_run_bytes<Bits>(g_tokens);
  const std::size_t tile_bytes = kvq::reference::per_channel_tile_bytes<Bits>(d, g_tokens);
  float* scale = scratch;
  float* offset = scale + d;
  float* qs = offset + d;
  float* bias = qs + n_q * d;
  for (std::size_t i = 0; i < n_tiles; ++i) {
    const std::uint8_t* tile = tiles + i * tile_bytes;
    // The next tile, while this one is scored (rows-inl.h's PrefetchAhead: the
    // out-of-order window alone keeps too few misses in flight).
    for (std::size_t b = 0; b < tile_bytes; b += 64) hwy::Prefetch(tile + tile_bytes + b);
    ReadMeta(tile + d * run_bytes, d, scale, offset);
    for (std::size_t g = 0; g < n_q; ++g) bias[g] = FoldQuery(q + g * q_stride, scale, offset, d, qs + g * d);
    fn(tile, out + i * g_tokens, qs, bias);
  }
}

// fn(G, g) for the queries [g, g + G) of n_q, G = 4 (up to Max), 2, 1.
template <std::size_t Max, class Fn>
HWY_INLINE void ForQueryGroups(std::size_t n_q, Fn&& fn) {
  std::size_t g = 0;
  if constexpr (Max >= 4)
    for (; g + 4 <= n_q; g += 4) fn(std::integral_constant<std::size_t, 4>(), g);
  if constexpr (Max >= 2)
    for (; g + 2 <= n_q; g += 2) fn(std::integral_constant<std::size_t, 2>(), g);
  for (; g < n_q; ++g) fn(std::integral_constant<std::size_t, 1>(), g);
}

// scores over n_tiles tiles: out[qi * out_stride + i * G + t]. `scratch`
// holds 2 * d + n_q * (d + 1) floats.
template <unsigned Bits>
HWY_INLINE void Scores(const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* tiles,
                       std::size_t n_tiles, std::size_t d, std::size_t g_tokens, float* scratch, float* out,
                       std::size_t out_stride) {
  const std::size_t run_bytes = kvq::reference::per_channel_run_bytes<Bits>(g_tokens);
  ForEachFoldedTile<Bits>(q, n_q, q_stride, tiles, n_tiles, d, g_tokens, scratch, out,
                          [&](const std::uint8_t* tile, float* o, const float* qs, const float* bias) HWY_ATTR {
    for (std::size_t t0 = 0; t0 < g_tokens; t0 += kChunk)
      ForQueryGroups<kMaxGroup>(n_q, [&](auto group, std::size_t g) HWY_ATTR {
        ScoresChunk<Bits, decltype(group)::value>(tile, run_bytes, g_tokens, d, t0, qs + g * d, bias + g,
                                                  o + g * out_stride, out_stride);
      });
  });
}

// sum_t w[t] * k[t][c] for one channel's run, two partial sums.
template <unsigned Bits>
HWY_INLINE VF WeightedCodes(const std::uint8_t* run, std::size_t g_tokens, const float* HWY_RESTRICT w) {
  const DF df;
  VF a = hn::Zero(df), b = hn::Zero(df);
  CodeStream<Bits> codes(run, g_tokens);
  for (std::size_t t = 0; t < g_tokens; t += 2 * kLanes) {
    a = hn::MulAdd(hn::LoadU(df, w + t), CodesToFloat(codes.Next()), a);
    b = hn::MulAdd(hn::LoadU(df, w + t + kLanes), CodesToFloat(codes.Next()), b);
  }
  return hn::Add(a, b);
}

// acc_qi[c] += sum_t w_qi[i * G + t] * decode(tile i)[t][c]. `scratch` holds
// 2 * d floats.
template <unsigned Bits>
HWY_INLINE void Accumulate(const float* w, std::size_t n_q, std::size_t w_stride, const std::byte* tiles_in,
                           std::size_t n_tiles, std::size_t d, std::size_t g_tokens, float* scratch, float* acc,
                           std::size_t acc_stride) {
  const auto* tiles = reinterpret_cast<const std::uint8_t*>(tiles_in);
  const std::size_t run_bytes = kvq::reference::per_channel_run_bytes<Bits>(g_tokens);
  const std::size_t tile_bytes = kvq::reference::per_channel_tile_bytes<Bits>(d, g_tokens);
  float* scale = scratch;
  float* offset = scale + d;
  for (std::size_t i = 0; i < n_tiles; ++i) {
    const std::uint8_t* tile = tiles + i * tile_bytes;
    ReadMeta(tile + d * run_bytes, d, scale, offset);
    for (std::size_t g = 0; g < n_q; ++g) {
      const float* wg = w + g * w_stride + i * g_tokens;
      float* ag = acc + g * acc_stride;
      float wsum = 0.0f;
      for (std::size_t t = 0; t < g_tokens; ++t) wsum += wg[t];
      for (std::size_t c = 0; c < d; c += 4) {
        float dot[4];
#if HWY_TARGET != HWY_SCALAR
        const auto s4 = Sum4(WeightedCodes<Bits>(tile + c * run_bytes, g_tokens, wg),
                           WeightedCodes<Bits>(tile + (c + 1) * run_bytes, g_tokens, wg),
                           WeightedCodes<Bits>(tile + (c + 2) * run_bytes, g_tokens, wg),
                           WeightedCodes<Bits>(tile + (c + 3) * run_bytes, g_tokens, wg));
        hn::StoreU(s4, hn::CappedTag<float, 4>(), dot);
#else
        for (std::size_t j = 0; j < 4; ++j)
          dot[j] = hn::GetLane(WeightedCodes<Bits>(tile + (c + j) * run_bytes, g_tokens, wg));
#endif
        for (std::size_t j = 0; j < 4; ++j) ag[c + j] += scale[c + j] * dot[j] + offset[c + j] * wsum;
      }
    }
  }
}

#if HWY_TARGET != HWY_SCALAR
// ---------------------------------------------------------------------------
// int8 scores.

inline constexpr std::size_t kI8Chunk = int8_dot::kVecBytes >= 32 ? 32 : 16;  // tokens per chunk
using DC = hn::CappedTag<std::uint8_t, kI8Chunk>;  // one channel's codes of a chunk, one byte per token
using VC = hn::Vec<DC>;
inline constexpr std::size_t kI8Vecs = 4 * kI8Chunk / int8_dot::kVecBytes;  // byte vectors per 4 channels
// Query sub-group of a chunk: int32 and f32 accumulators for G queries stay
// in registers (AVX-512: 32 of them).
inline constexpr std::size_t kI8Group = HWY_TARGET <= HWY_AVX3 ? 4 : 1;

// Where a chunk's codes sit in a channel's run: bytes from `offset`, shifted
// right by `shift`; 3 bits: the high plane's bits from `high`.
struct ChunkPlace {
  std::size_t offset, high;
  int shift;
};
template <unsigned Bits>
HWY_INLINE ChunkPlace PlaceOf(std::size_t g, std::size_t t) {
  if constexpr (Bits == 4) {
    const std::size_t half = g / 2;  // a multiple of kI8Chunk (per_channel_int8_supported)
    return t < half ? ChunkPlace{t, 0, 0} : ChunkPlace{t - half, 0, 4};
  } else {
    const std::size_t q = g / 4;
    return ChunkPlace{t % q, q + t / 8, static_cast<int>(2 * (t / q))};
  }
}

template <unsigned Bits>
HWY_INLINE VC ChunkCodes(const std::uint8_t* run, const ChunkPlace& at) {
  const DC dc;
  const hn::Repartition<std::uint16_t, DC> d16;
  const VC v = hn::BitCast(dc, hn::ShiftRightSame(hn::BitCast(d16, hn::LoadU(dc, run + at.offset)), at.shift));
  VC c = hn::And(v, hn::Set(dc, static_cast<std::uint8_t>((1u << (Bits == 4 ? 4 : 2)) - 1)));
  if constexpr (Bits == 3) c = hn::Or(c, hn::IfThenElseZero(hn::LoadMaskBits(dc, run + at.high), hn::Set(dc, 4)));
  return c;
}

// Channels c..c+3 of a chunk as token-major bytes: the chunk's kI8Vecs byte
// vectors, int32 lanes = tokens in the order StoreChunk undoes.
template <unsigned Bits>
HWY_INLINE void ChunkKeys(const std::uint8_t* codes, std::size_t run_bytes, const ChunkPlace& at,
                          int8_dot::VB* k) {
  const DC dc;
  const hn::Repartition<std::uint16_t, DC> d16;
  const VC a = ChunkCodes<Bits>(codes, at), b = ChunkCodes<Bits>(codes + run_bytes, at);
  const VC c = ChunkCodes<Bits>(codes + 2 * run_bytes, at), d = ChunkCodes<Bits>(codes + 3 * run_bytes, at);
  const auto ab_lo = hn::BitCast(d16, hn::InterleaveLower(dc, a, b)), ab_hi = hn::BitCast(d16, hn::InterleaveUpper(dc, a, b));
  const auto cd_lo = hn::BitCast(d16, hn::InterleaveLower(dc, c, d)), cd_hi = hn::BitCast(d16, hn::InterleaveUpper(dc, c, d));
  // Per 128-bit block of 16 tokens: x0 tokens 0-3, x1 4-7, x2 8-11, x3 12-15.
  const VC x[4] = {hn::BitCast(dc, hn::InterleaveLower(d16, ab_lo, cd_lo)),
                   hn::BitCast(dc, hn::InterleaveUpper(d16, ab_lo, cd_lo)),
                   hn::BitCast(dc, hn::InterleaveLower(d16, ab_hi, cd_hi)),
                   hn::BitCast(dc, hn::InterleaveUpper(d16, ab_hi, cd_hi))};
#if HWY_TARGET <= HWY_AVX3  // tokens 0-3, 16-19, 4-7, 20-23 | 8-11, 24-27, 12-15, 28-31
  static_assert(kI8Vecs == 2);
  k[0] = hn::Combine(int8_dot::DB(), x[1], x[0]);
  k[1] = hn::Combine(int8_dot::DB(), x[3], x[2]);
#else  // AVX2: k[i] = tokens 4i..4i+3, 16+4i..16+4i+3; 128-bit: tokens 4i..4i+3
  static_assert(kI8Vecs == 4);
  KVQ_UNROLL
  for (std::size_t i = 0; i < 4; ++i) k[i] = x[i];
#endif
}

// Stores one query's chunk scores y (ChunkKeys' token order) at out.
HWY_INLINE void StoreChunk(const VF (&y)[kI8Vecs], float* HWY_RESTRICT out) {
  const DF df;
#if HWY_TARGET <= HWY_AVX3
  hn::StoreU(VF{_mm512_shuffle_f32x4(y[0].raw, y[1].raw, _MM_SHUFFLE(2, 0, 2, 0))}, df, out);
  hn::StoreU(VF{_mm512_shuffle_f32x4(y[0].raw, y[1].raw, _MM_SHUFFLE(3, 1, 3, 1))}, df, out + 16);
#elif HWY_TARGET == HWY_AVX2
  hn::StoreU(hn::ConcatLowerLower(df, y[1], y[0]), df, out);
  hn::StoreU(hn::ConcatLowerLower(df, y[3], y[2]), df, out + 8);
  hn::StoreU(hn::ConcatUpperUpper(df, y[1], y[0]), df, out + 16);
  hn::StoreU(hn::ConcatUpperUpper(df, y[3], y[2]), df, out + 24);
#else
  static_assert(kI8Chunk == 4 * kLanes);
  KVQ_UNROLL
  for (std::size_t i = 0; i < kI8Vecs; ++i) hn::StoreU(y[i], df, out + i * kLanes);
#endif
}

// One chunk of a tile for G queries: qc[g * d + c] the folded query codes,
// qd[g * n_blocks + b] their steps, bias[g] the offset terms.
template <unsigned Bits, class Dot, std::size_t G>
HWY_INLINE void ScoresInt8Chunk(const std::uint8_t* HWY_RESTRICT codes, std::size_t run_bytes, std::size_t d,
                                const ChunkPlace& at, const std::int8_t* HWY_RESTRICT qc,
                                const float* HWY_RESTRICT qd, const float* bias, float* HWY_RESTRICT out,
                                std::size_t out_stride) {
  using namespace int8_dot;
  const DF df;
  const DI di;
  const std::size_t n_blocks = d / 32;
  VF acc[G][kI8Vecs];
  KVQ_UNROLL
  for (std::size_t g = 0; g < G; ++g)
    KVQ_UNROLL
    for (std::size_t v = 0; v < kI8Vecs; ++v) acc[g][v] = hn::Zero(df);
  for (std::size_t b = 0; b < n_blocks; ++b) {
    VI sum[G][kI8Vecs];
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g)
      KVQ_UNROLL
      for (std::size_t v = 0; v < kI8Vecs; ++v) sum[g][v] = hn::Zero(di);
    for (std::size_t c = 32 * b; c < 32 * b + 32; c += 4) {
      VB k[kI8Vecs];
      ChunkKeys<Bits>(codes + c * run_bytes, run_bytes, at, k);
      KVQ_UNROLL
      for (std::size_t g = 0; g < G; ++g) {
        std::int32_t word;
        std::memcpy(&word, qc + g * d + c, 4);
        const VI8 q4 = hn::BitCast(DI8(), hn::Set(di, word));
        KVQ_UNROLL
        for (std::size_t v = 0; v < kI8Vecs; ++v) sum[g][v] = Dot::Small(k[v], q4, sum[g][v]);
      }
    }
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      const VF step = hn::Set(df, qd[g * n_blocks + b]);
      KVQ_UNROLL
      for (std::size_t v = 0; v < kI8Vecs; ++v) acc[g][v] = hn::MulAdd(hn::ConvertTo(df, sum[g][v]), step, acc[g][v]);
    }
  }
  KVQ_UNROLL
  for (std::size_t g = 0; g < G; ++g) {
    KVQ_UNROLL
    for (std::size_t v = 0; v < kI8Vecs; ++v) acc[g][v] = hn::Add(acc[g][v], hn::Set(df, bias[g]));
    StoreChunk(acc[g], out + g * out_stride);
  }
}

// int8 scores over n_tiles tiles (Scores' layout). `scratch` holds
// 2 * d + n_q * (d + 1 + d / 32 + d / 4) floats.
template <unsigned Bits, class Dot>
HWY_INLINE void ScoresInt8(const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* tiles,
                           std::size_t n_tiles, std::size_t d, std::size_t g_tokens, float* scratch, float* out,
                           std::size_t out_stride) {
  const std::size_t run_bytes = kvq::reference::per_channel_run_bytes<Bits>(g_tokens);
  const std::size_t n_blocks = d / 32;
  float* qd = scratch + 2 * d + n_q * (d + 1);  // after ForEachFoldedTile's part
  auto* qc = reinterpret_cast<std::int8_t*>(qd + n_q * n_blocks);
  ForEachFoldedTile<Bits>(q, n_q, q_stride, tiles, n_tiles, d, g_tokens, scratch, out,
                          [&](const std::uint8_t* tile, float* o, const float* qs, const float* bias) HWY_ATTR {
    float unused_sum;
    for (std::size_t g = 0; g < n_q; ++g)
      for (std::size_t b = 0; b < n_blocks; ++b)  // the reference's rounding, bit for bit
        qd[g * n_blocks + b] = int8_query::QuantizeBlock(qs + g * d + 32 * b, qc + g * d + 32 * b, unused_sum);
    for (std::size_t t0 = 0; t0 < g_tokens; t0 += kI8Chunk) {
      const ChunkPlace at = PlaceOf<Bits>(g_tokens, t0);
      ForQueryGroups<kI8Group>(n_q, [&](auto group, std::size_t g) HWY_ATTR {
        ScoresInt8Chunk<Bits, Dot, decltype(group)::value>(tile, run_bytes, d, at, qc + g * d, qd + g * n_blocks,
                                                           bias + g, o + g * out_stride + t0, out_stride);
      });
    }
  });
}
#endif  // HWY_TARGET != HWY_SCALAR

}  // namespace per_channel

// int8 scores with this target's dot products (SCALAR: the reference's
// loop, tile by tile).
template <unsigned Bits>
HWY_INLINE void ScoresInt8PerChannel(const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* tiles,
                                     std::size_t n_tiles, std::size_t d, std::size_t g, float* scratch, float* out,
                                     std::size_t out_stride) {
#if HWY_TARGET == HWY_SCALAR
  (void)scratch;
  const std::size_t tile_bytes = kvq::reference::per_channel_tile_bytes<Bits>(d, g);
  for (std::size_t qi = 0; qi < n_q; ++qi)
    for (std::size_t i = 0; i < n_tiles; ++i)
      kvq::reference::per_channel_scores_int8<Bits>(q + qi * q_stride, tiles + i * tile_bytes, d, g,
                                                   out + qi * out_stride + i * g);
#else
#if HWY_TARGET == HWY_NEON && KVQ_INT8_SDOT_AT_RUN_TIME
  if (::kvq::kernels::cpu::has_sdot())
    return per_channel::ScoresInt8<Bits, int8_dot::SdotDot>(q, n_q, q_stride, tiles, n_tiles, d, g, scratch, out,
                                                            out_stride);
#endif
  per_channel::ScoresInt8<Bits, int8_dot::TargetDot>(q, n_q, q_stride, tiles, n_tiles, d, g, scratch, out,
                                                     out_stride);
#endif
}

// Entry points (HWY_EXPORT needs plain functions); shapes are checked by the
// dispatch wrappers.
#define KVQ_PER_CHANNEL_KERNELS(BITS)                                                                       \
  inline void ScoresPc##BITS(const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* tiles,    \
                             std::size_t n_tiles, std::size_t d, std::size_t g, float* scratch, float* out,     \
                             std::size_t out_stride) {                                                      \
    per_channel::Scores<BITS>(q, n_q, q_stride, tiles, n_tiles, d, g, scratch, out, out_stride);            \
  }                                                                                                         \
  inline void AccumulatePc##BITS(const float* w, std::size_t n_q, std::size_t w_stride, const std::byte* tiles, \
                                 std::size_t n_tiles, std::size_t d, std::size_t g, float* scratch, float* acc, \
                                 std::size_t acc_stride) {                                                  \
    per_channel::Accumulate<BITS>(w, n_q, w_stride, tiles, n_tiles, d, g, scratch, acc, acc_stride);        \
  }                                                                                                         \
  inline void ScoresInt8Pc##BITS(const float* q, std::size_t n_q, std::size_t q_stride, const std::byte* tiles, \
                                 std::size_t n_tiles, std::size_t d, std::size_t g, float* scratch, float* out, \
                                 std::size_t out_stride) {                                                  \
    ScoresInt8PerChannel<BITS>(q, n_q, q_stride, tiles, n_tiles, d, g, scratch, out, out_stride);           \
  }
KVQ_PER_CHANNEL_KERNELS(2)
KVQ_PER_CHANNEL_KERNELS(3)
KVQ_PER_CHANNEL_KERNELS(4)
#undef KVQ_PER_CHANNEL_KERNELS

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_PER_CHANNEL_INL_H_

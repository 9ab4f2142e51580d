// Reduced-precision value products: acc_g += sum_t w_g,t * decode(row t) for
// the uniform formats, whose codes are integers exact in bf16 (q8_0, q4_0,
// q4_1, q3_1, q2_1; int8: q8_0's codes offset to c + 128), with bf16 dot products (AVX512_BF16 vdpbf16ps: 32 multiply-adds per
// instruction) or int8 dot products (AVX512-VNNI vpdpbusd: 64) instead of
// f32 FMAs (16). Decode attention at GQA 4-8 is bound by those
// multiply-adds (8 queries x 128 values per row for V alone).
//
// Compiled once per SIMD target by kvq/kernels/dispatch.hpp (through
// all-inl.h); do not include it directly. The contracts are in
// kvq/kernels/dispatch.hpp (accumulate_bf16, accumulate_int8) and
// docs/FORMATS.md; tests/kernels/uniform.cpp checks them against the scalar
// reference.
//
// The math. A block value is x = d c + m (q4_0: c = n - 8, m = 0), so
//   sum_t w_t x_t[j] = sum_t (w_t d_t) c_t[j] + sum_t w_t m_t.
// The codes are exact in both precisions; only the products p_t = w_t d_t
// are rounded, once per (query, row, block), and the minimum's part stays
// f32. bf16: p rounded to 8 significant bits; a row pair (t, t+1) is one dot
// product per 16 values, the codes of both rows interleaved value by value
// (looked up from a 32-entry table with vpermw, not converted) against
// (p_t, p_t+1) broadcast. int8: p rounded to a multiple of max|p| / 127 over
// a tile of 32 rows; four rows' unsigned codes n, interleaved, against their
// four weight codes, with q4_0's bias 8 taken off the exact integer sum.
//
// Only the AVX3_DL copy has the fast paths (int8: VNNI is part of AVX3_DL;
// bf16: a cpuid test once per process, Sapphire Rapids and Zen 4 or later);
// every other target and CPU runs rows-inl.h's f32 Accumulate unchanged.
// Highway 1.0.3 has neither dot product and compiles AVX3_DL without
// "avx512bf16", so those instructions are inline assembly (as
// int8_dot-inl.h does for VNNI).
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#endif

#if defined(KVQ_KERNELS_VALUE_PRODUCTS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVQ_KERNELS_VALUE_PRODUCTS_INL_H_
#undef KVQ_KERNELS_VALUE_PRODUCTS_INL_H_
#else
#define KVQ_KERNELS_VALUE_PRODUCTS_INL_H_
#endif

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvq::kernels {
namespace HWY_NAMESPACE {
namespace value_products {

namespace hn = hwy::HWY_NAMESPACE;
using namespace row_kernels;  // DF, VF, kLanes, kTileRows, KVQ_UNROLL, Accumulate

#undef KVQ_BF16_ACCUMULATE
#undef KVQ_AMX_ACCUMULATE
#if HWY_TARGET == HWY_AVX3_DL
#define KVQ_BF16_ACCUMULATE 1

// AVX512_BF16: CPUID leaf 7, sub-leaf 1, EAX bit 5 (the OS saves zmm state,
// or Highway would not have chosen an AVX-512 target).
inline bool CpuHasBf16() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) != 0 && ((a >> 5) & 1u) != 0;
  }();
  return has;
}

// acc + sum over pairs of a (bf16 x 32) times b (bf16 x 32).
HWY_INLINE __m512 Dpbf16(__m512 acc, __m512i a, __m512i b) {
  asm("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}
// 16 floats -> 16 bf16 (round to nearest even).
HWY_INLINE __m256i ToBf16(__m512 x) {
  __m256i r;
  asm("vcvtneps2bf16 %1, %0" : "=v"(r) : "v"(x));
  return r;
}

// bf16 bits of code - bias for codes 0..15, twice (vpermw reads 5 index bits,
// so a word holding a whole code byte needs no mask for its low nibble).
template <class Fmt>
struct CodeTable {
  static constexpr std::uint16_t Bits(int i) {
    // exact: |code - bias| < 256 has at most 8 significant bits
    return static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(static_cast<float>((i & 15) - Fmt::kInt8Bias)) >> 16);
  }
  alignas(64) static constexpr std::uint16_t kBits[32] = {
      Bits(0),  Bits(1),  Bits(2),  Bits(3),  Bits(4),  Bits(5),  Bits(6),  Bits(7),  Bits(8),  Bits(9),  Bits(10),
      Bits(11), Bits(12), Bits(13), Bits(14), Bits(15), Bits(16), Bits(17), Bits(18), Bits(19), Bits(20), Bits(21),
      Bits(22), Bits(23), Bits(24), Bits(25), Bits(26), Bits(27), Bits(28), Bits(29), Bits(30), Bits(31)};
};

// The codes of one block of rows a and b (the decoder's Int8Codes: 32 bytes in
// value order), interleaved a, b value by value as bf16: values 0..15 in lo,
// 16..31 in hi.
template <class Fmt>
HWY_INLINE void PairCodes(const Fmt& fmt, const std::uint8_t* a, const std::uint8_t* b, __m512i table, __m512i& lo,
                          __m512i& hi) {
  if constexpr (requires { Fmt::kNibbleCodes; }) {
    // ggml's 4-bit order (byte j: value j low, j + 16 high): interleave the
    // two rows' bytes, widen to words; the table ignores bits 5.. of a word.
    const __m128i qa = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + Fmt::kNibbleCodes));
    const __m128i qb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + Fmt::kNibbleCodes));
    const __m512i z = _mm512_cvtepu8_epi16(
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(qa, qb)), _mm_unpackhi_epi8(qa, qb), 1));
    lo = _mm512_permutexvar_epi16(z, table);
    hi = _mm512_permutexvar_epi16(_mm512_srli_epi16(z, 4), table);
  } else if constexpr (requires { Fmt::kSignedCodes; }) {
    // q8_0's signed codes c are exact in bf16 (|c| <= 128): the high half of
    // float(c). Word 2j of a lane from row a (shifted down), 2j + 1 from row b.
    (void)table;
    const auto half = [](const std::uint8_t* p) HWY_ATTR {
      return _mm512_castps_si512(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
    };
    const std::uint8_t* ca = a + Fmt::kSignedCodes;
    const std::uint8_t* cb = b + Fmt::kSignedCodes;
    lo = _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(half(ca), 16), half(cb));
    hi = _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(half(ca + 16), 16), half(cb + 16));
  } else {
    int8_dot::VB va[int8_dot::kGroupVecs], vb[int8_dot::kGroupVecs];
    fmt.template Int8Codes<1>(a, va);
    fmt.template Int8Codes<1>(b, vb);
    // 64-bit quarters 0 2 1 3: the in-lane byte interleave then yields values in order.
    const __m256i ya = _mm256_permute4x64_epi64(_mm512_castsi512_si256(va[0].raw), 0xD8);
    const __m256i yb = _mm256_permute4x64_epi64(_mm512_castsi512_si256(vb[0].raw), 0xD8);
    lo = _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(_mm256_unpacklo_epi8(ya, yb)), table);
    hi = _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(_mm256_unpackhi_epi8(ya, yb)), table);
  }
}

// The fp16 fields opening one block of each row of a tile (the scale d and,
// for the formats with a minimum, m right after it), gathered 16 rows at a
// time; rows outside the masks read as 0.
struct TileFields {
  HWY_INLINE TileFields(const std::uint8_t* blk, std::size_t row_bytes, __mmask16 m0, __mmask16 m1) {
    const __m512i offs = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(static_cast<int>(row_bytes)));
    f[0] = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m0, offs, blk, 1);
    f[1] = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m1, offs, blk + 16 * row_bytes, 1);
    d[0] = VF{_mm512_cvtph_ps(_mm512_cvtepi32_epi16(f[0]))};
    d[1] = VF{_mm512_cvtph_ps(_mm512_cvtepi32_epi16(f[1]))};
  }
  // sum_t w_t m_t for the tile's weights w0 (rows 0..15), w1 (16..31).
  HWY_INLINE float MinSum(VF w0, VF w1) const {
    const DF df;
    const VF m0{_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(f[0], 16)))};
    const VF m1{_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(f[1], 16)))};
    return hn::GetLane(hn::SumOfLanes(df, hn::MulAdd(w1, m1, hn::Mul(w0, m0))));
  }
  __m512i f[2];
  VF d[2];
};

// Masks of rows [0, n) of a tile in its two halves.
HWY_INLINE void TileMasks(std::size_t n, __mmask16& m0, __mmask16& m1) {
  m0 = static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
  m1 = static_cast<__mmask16>(n >= 32 ? 0xFFFFu : n <= 16 ? 0u : (1u << (n - 16)) - 1u);
}

// Rows t and t + 1 of a block (t alone, weight 0 for the other, at an odd
// tail) into the G queries' accumulators of the block's 32 values.
template <class Fmt, std::size_t G>
HWY_INLINE void PairStep(const Fmt& fmt, const std::uint8_t* blk, std::size_t row_bytes, std::size_t n, std::size_t t,
                         __m512i table, const std::uint16_t (&p)[G][kTileRows], __m512 (&a)[G][2]) {
  const std::size_t u = t + 1 < n ? t + 1 : t;
  __m512i lo, hi;
  PairCodes<Fmt>(fmt, blk + t * row_bytes, blk + u * row_bytes, table, lo, hi);
  KVQ_UNROLL
  for (std::size_t g = 0; g < G; ++g) {
    std::uint32_t pw;
    std::memcpy(&pw, p[g] + t, 4);
    const __m512i bw = _mm512_set1_epi32(static_cast<int>(pw));
    a[g][0] = Dpbf16(a[g][0], lo, bw);
    a[g][1] = Dpbf16(a[g][1], hi, bw);
  }
}

// One tile of n <= kTileRows rows for G queries, P partial sums per
// accumulator (token pairs alternate between them).
template <class Fmt, std::size_t G, std::size_t P>
HWY_INLINE void TileBf16(const Fmt& fmt, const float* HWY_RESTRICT w, std::size_t w_stride, const std::uint8_t* HWY_RESTRICT rows,
                         std::size_t row_bytes, std::size_t n, std::size_t n_blocks, float* HWY_RESTRICT acc,
                         std::size_t acc_stride) {
  static_assert(!Fmt::kRowScale && Fmt::kHeader == 0, "bf16 products: the uniform formats");
  const DF df;
  const __m512i table = _mm512_load_si512(CodeTable<Fmt>::kBits);
  const std::size_t pairs = (n + 1) / 2;
  // The tile's weights, zero past n (masked loads read nothing there).
  alignas(64) float wl[G][kTileRows];
  __mmask16 m0, m1;
  TileMasks(n, m0, m1);
  KVQ_UNROLL
  for (std::size_t g = 0; g < G; ++g) {
    _mm512_store_ps(wl[g], _mm512_maskz_loadu_ps(m0, w + g * w_stride));
    _mm512_store_ps(wl[g] + 16, _mm512_maskz_loadu_ps(m1, w + g * w_stride + 16));
  }
  for (std::size_t b = 0; b < n_blocks; ++b) {
    const std::uint8_t* blk = rows + b * Fmt::kBytes;
    const TileFields fl(blk, row_bytes, m0, m1);
    const VF d0 = fl.d[0], d1 = fl.d[1];
    // p = w d in bf16, pairs of rows as one 32-bit word (an odd tail pairs
    // with weight 0); the minimum's part sum_t w m in f32.
    alignas(64) std::uint16_t p[G][kTileRows];
    float msum[G];
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      const VF w0 = hn::Load(df, wl[g]), w1 = hn::Load(df, wl[g] + 16);
      _mm256_store_si256(reinterpret_cast<__m256i*>(p[g]), ToBf16(hn::Mul(w0, d0).raw));
      _mm256_store_si256(reinterpret_cast<__m256i*>(p[g] + 16), ToBf16(hn::Mul(w1, d1).raw));
      msum[g] = 0.0f;
      if constexpr (Fmt::kInt8Min) msum[g] = fl.MinSum(w0, w1);
    }

    __m512 a[P][G][2];
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      a[0][g][0] = _mm512_loadu_ps(acc + g * acc_stride + b * 32);
      a[0][g][1] = _mm512_loadu_ps(acc + g * acc_stride + b * 32 + 16);
      KVQ_UNROLL
      for (std::size_t s = 1; s < P; ++s) a[s][g][0] = a[s][g][1] = _mm512_setzero_ps();
    }
    std::size_t i = 0;
    for (; i + P <= pairs; i += P)
      KVQ_UNROLL
      for (std::size_t s = 0; s < P; ++s) PairStep<Fmt, G>(fmt, blk, row_bytes, n, 2 * (i + s), table, p, a[s]);
    for (; i < pairs; ++i) PairStep<Fmt, G>(fmt, blk, row_bytes, n, 2 * i, table, p, a[0]);
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      __m512 lo = a[0][g][0], hi = a[0][g][1];
      KVQ_UNROLL
      for (std::size_t s = 1; s < P; ++s) {
        lo = _mm512_add_ps(lo, a[s][g][0]);
        hi = _mm512_add_ps(hi, a[s][g][1]);
      }
      if constexpr (Fmt::kInt8Min) {
        const __m512 m = _mm512_set1_ps(msum[g]);
        lo = _mm512_add_ps(lo, m);
        hi = _mm512_add_ps(hi, m);
      }
      _mm512_storeu_ps(acc + g * acc_stride + b * 32, lo);
      _mm512_storeu_ps(acc + g * acc_stride + b * 32 + 16, hi);
    }
  }
}

// ---------------------------------------------------------------------------
// bf16 products on AMX tiles (Sapphire Rapids and later, Linux): the same
// products p = w d in bf16 and the same interleaved code pairs, but one
// TDPBF16PS multiplies up to 16 queries' weights of 32 rows (tile A: a row per
// query) by those rows' codes of 16 values (tile B: a row per row pair), 512
// multiply-adds per query instead of vdpbf16ps' 32. The V side of a GQA group
// then costs about what one query's does: decoding the codes, not multiplying.
// Highway 1.0.3 and GCC 12's AVX3_DL flags have no AMX, so the tile
// instructions are inline assembly on fixed tile registers: tmm0/tmm1 hold the
// accumulators of values 0..15 / 16..31 of a block, tmm2 (or tmm5) the
// weights, tmm3/tmm4 (or tmm6/tmm7) the codes.
#if defined(__x86_64__) && defined(__linux__)
#define KVQ_AMX_ACCUMULATE 1

inline constexpr std::size_t kAmxMaxGroup = 16;  // rows of tiles A and C
inline constexpr std::size_t kAmxMinGroup = 2;   // a single query keeps vdpbf16ps

// AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22), and the kernel's
// permission to use the tile state (arch_prctl ARCH_REQ_XCOMP_PERM for
// XTILEDATA, Linux 5.16+), asked for once per process; and AVX512_BF16, whose
// vcvtneps2bf16 rounds the products for the tiles. KVQ_NO_AMX=1 in the
// environment turns the path off (the benchmarks compare both that way).
inline bool CpuHasAmxBf16() {
  static const bool has = [] {
    if (!CpuHasBf16()) return false;
    if (const char* off = std::getenv("KVQ_NO_AMX"); off != nullptr && *off != '\0' && *off != '0') return false;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0 || ((d >> 22) & 1u) == 0 || ((d >> 24) & 1u) == 0)
      return false;
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return has;
}

// The tile shapes (palette 1), 64 bytes (16 f32 / 32 bf16) per row: C
// (tmm0, tmm1) and A (tmm2, tmm5) a row per query, B (tmm3, tmm4, tmm6,
// tmm7) 16 rows.
struct alignas(64) AmxConfig {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
  explicit AmxConfig(std::size_t queries) {
    for (int i = 0; i < 8; ++i) {
      colsb[i] = 64;
      rows[i] = static_cast<std::uint8_t>(i <= 2 || i == 5 ? queries : 16);
    }
  }
};
static_assert(sizeof(AmxConfig) == 64);

HWY_INLINE void AmxLoadConfig(const AmxConfig& cfg) { asm volatile("ldtilecfg %0" ::"m"(cfg)); }
HWY_INLINE void AmxRelease() { asm volatile("tilerelease" ::: "memory"); }

// One row tile's operands in memory: tile A (the products, a row per query)
// and the two B tiles (code pairs of values 0..15 and 16..31, a row per row
// pair).
struct AmxOperands {
  alignas(64) std::uint16_t p[kAmxMaxGroup][kTileRows];
  alignas(64) __m512i lo[kTileRows / 2], hi[kTileRows / 2];
};

// Loads operands into tile set S (tmm2-4 or tmm5-7) and adds their products
// to tmm0/tmm1. Two sets alternate so that a tile product overlaps the next
// tile's loads (tile registers are not renamed).
template <int S>
HWY_INLINE void AmxStep(const AmxOperands& x) {
  const std::size_t stride = 64;
  if constexpr (S == 0) {
    asm volatile("tileloadd (%0,%1,1), %%tmm2" ::"r"(&x.p[0][0]), "r"(stride) : "memory");
    asm volatile("tileloadd (%0,%1,1), %%tmm3" ::"r"(x.lo), "r"(stride) : "memory");
    asm volatile("tileloadd (%0,%1,1), %%tmm4" ::"r"(x.hi), "r"(stride) : "memory");
    asm volatile("tdpbf16ps %%tmm3, %%tmm2, %%tmm0" ::: "memory");
    asm volatile("tdpbf16ps %%tmm4, %%tmm2, %%tmm1" ::: "memory");
  } else {
    asm volatile("tileloadd (%0,%1,1), %%tmm5" ::"r"(&x.p[0][0]), "r"(stride) : "memory");
    asm volatile("tileloadd (%0,%1,1), %%tmm6" ::"r"(x.lo), "r"(stride) : "memory");
    asm volatile("tileloadd (%0,%1,1), %%tmm7" ::"r"(x.hi), "r"(stride) : "memory");
    asm volatile("tdpbf16ps %%tmm6, %%tmm5, %%tmm0" ::: "memory");
    asm volatile("tdpbf16ps %%tmm7, %%tmm5, %%tmm1" ::: "memory");
  }
}

// The operands of rows [t, t + n), n <= 32, of block blk for g_n queries;
// adds the minimum's part sum_t w_t m_t to msum.
template <class Fmt>
HWY_INLINE void AmxPrepare(const Fmt& fmt, const float* HWY_RESTRICT w, std::size_t g_n, std::size_t w_stride,
                           const std::uint8_t* HWY_RESTRICT blk, std::size_t row_bytes, std::size_t n, __m512i table,
                           AmxOperands& x, float* HWY_RESTRICT msum) {
  __mmask16 m0, m1;
  TileMasks(n, m0, m1);
  const TileFields fl(blk, row_bytes, m0, m1);
  for (std::size_t g = 0; g < g_n; ++g) {
    const VF w0{_mm512_maskz_loadu_ps(m0, w + g * w_stride)};
    const VF w1{_mm512_maskz_loadu_ps(m1, w + g * w_stride + 16)};
    _mm256_store_si256(reinterpret_cast<__m256i*>(x.p[g]), ToBf16(hn::Mul(w0, fl.d[0]).raw));
    _mm256_store_si256(reinterpret_cast<__m256i*>(x.p[g] + 16), ToBf16(hn::Mul(w1, fl.d[1]).raw));
    if constexpr (Fmt::kInt8Min) msum[g] += fl.MinSum(w0, w1);
  }
  // Pair r = rows 2r, 2r + 1; an odd tail pairs a row with itself (its
  // second weight is 0) and pairs past the tail are zero codes.
  const std::size_t pairs = (n + 1) / 2;
  for (std::size_t r = 0; r < pairs; ++r) {
    const std::size_t u = 2 * r + 1 < n ? 2 * r + 1 : 2 * r;
    PairCodes<Fmt>(fmt, blk + 2 * r * row_bytes, blk + u * row_bytes, table, x.lo[r], x.hi[r]);
  }
  for (std::size_t r = pairs; r < kTileRows / 2; ++r) x.lo[r] = x.hi[r] = _mm512_setzero_si512();
}

// G <= 16 queries (weights w, accumulators acc) over n_rows rows: blocks in
// the outer loop, so each block's two accumulator tiles are loaded and stored
// once per call, and row tiles of 32 inside, two at a time.
template <class Fmt>
HWY_INLINE void GroupAmx(const Fmt& fmt, const float* HWY_RESTRICT w, std::size_t g_n, std::size_t w_stride,
                         const std::uint8_t* HWY_RESTRICT rows, std::size_t n_rows, std::size_t row_bytes,
                         std::size_t n_blocks, float* HWY_RESTRICT acc, std::size_t acc_stride) {
  static_assert(!Fmt::kRowScale && Fmt::kHeader == 0, "bf16 products: the uniform formats");
  const DF df;
  const __m512i table = _mm512_load_si512(CodeTable<Fmt>::kBits);
  const std::size_t acc_bytes = acc_stride * sizeof(float);
  AmxOperands x[2];
  for (std::size_t b = 0; b < n_blocks; ++b) {
    float* o = acc + b * 32;
    asm volatile("tileloadd (%0,%1,1), %%tmm0" ::"r"(o), "r"(acc_bytes) : "memory");
    asm volatile("tileloadd (%0,%1,1), %%tmm1" ::"r"(o + 16), "r"(acc_bytes) : "memory");
    float msum[kAmxMaxGroup] = {};
    const auto prepare = [&](std::size_t t, AmxOperands& into) HWY_ATTR {
      if (b == 0) PrefetchAhead(rows + t * row_bytes, kTileRows * row_bytes);
      const std::size_t n = n_rows - t < kTileRows ? n_rows - t : kTileRows;
      AmxPrepare<Fmt>(fmt, w + t, g_n, w_stride, rows + t * row_bytes + b * Fmt::kBytes, row_bytes, n, table, into,
                      msum);
    };
    std::size_t t = 0;
    for (; t + kTileRows < n_rows; t += 2 * kTileRows) {
      prepare(t, x[0]);
      prepare(t + kTileRows, x[1]);
      AmxStep<0>(x[0]);
      AmxStep<1>(x[1]);
    }
    if (t < n_rows) {
      prepare(t, x[0]);
      AmxStep<0>(x[0]);
    }
    asm volatile("tilestored %%tmm0, (%0,%1,1)" ::"r"(o), "r"(acc_bytes) : "memory");
    asm volatile("tilestored %%tmm1, (%0,%1,1)" ::"r"(o + 16), "r"(acc_bytes) : "memory");
    if constexpr (Fmt::kInt8Min)
      for (std::size_t g = 0; g < g_n; ++g) {
        const VF m = hn::Set(df, msum[g]);
        float* og = o + g * acc_stride;
        hn::StoreU(hn::Add(hn::LoadU(df, og), m), df, og);
        hn::StoreU(hn::Add(hn::LoadU(df, og + 16), m), df, og + 16);
      }
  }
}

// Every query in groups of up to 16, one tile configuration per group size,
// over spans of 256 rows (18 KiB of q4_0 at head_dim 128), so the block loop
// re-reads rows from L1/L2, not from memory, however long the call's run is.
inline constexpr std::size_t kAmxSpanRows = 8 * kTileRows;

template <class Fmt>
HWY_INLINE void AccumulateAmx(const Fmt& fmt, const float* w, std::size_t n_q, std::size_t w_stride,
                              const std::uint8_t* rows, std::size_t n_rows, std::size_t head_dim, float* acc,
                              std::size_t acc_stride) {
  const std::size_t n_blocks = head_dim / 32, row_bytes = n_blocks * Fmt::kBytes;
  std::size_t configured = 0;
  for (std::size_t t = 0; t < n_rows; t += kAmxSpanRows) {
    const std::size_t span = n_rows - t < kAmxSpanRows ? n_rows - t : kAmxSpanRows;
    for (std::size_t g = 0; g < n_q; g += kAmxMaxGroup) {
      const std::size_t g_n = n_q - g < kAmxMaxGroup ? n_q - g : kAmxMaxGroup;
      if (g_n != configured) {
        AmxLoadConfig(AmxConfig(g_n));
        configured = g_n;
      }
      GroupAmx<Fmt>(fmt, w + g * w_stride + t, g_n, w_stride, rows + t * row_bytes, span, row_bytes, n_blocks,
                    acc + g * acc_stride, acc_stride);
    }
  }
  AmxRelease();
}
#endif

// ---------------------------------------------------------------------------
// int8 products (VNNI): p_t = w_t d_t quantized per (query, tile, block) to
// int8 with the step s = max_t |p_t| / 127, and vpdpbusd multiplying the
// unsigned codes n of four rows by their four weight codes at once (64
// multiply-adds per instruction). A tile's integer sums are exact (|sum| <
// 32 * 127 * 15); q4_0's bias 8 comes off as 8 * sum(weight codes).

// acc + dpbusd(u, s): int8_dot-inl.h's, on raw registers.
HWY_INLINE __m512i Dpbusd(__m512i acc, __m512i u, __m512i s) {
  return int8_dot::Dpbusd(int8_dot::VI{acc}, int8_dot::VB{u}, int8_dot::VI8{s}).raw;
}

// The codes n of one block of rows t..t+3, each 32-bit lane holding one
// value's four codes (row t in the low byte): values 0..15 in lo, 16..31 in hi.
template <class Fmt>
HWY_INLINE void QuadCodes(const Fmt& fmt, const std::uint8_t* const (&r)[4], __m512i& lo, __m512i& hi) {
  if constexpr (requires { Fmt::kNibbleCodes; }) {
    __m128i x[4];
    KVQ_UNROLL
    for (int i = 0; i < 4; ++i) x[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r[i] + Fmt::kNibbleCodes));
    const __m128i a = _mm_unpacklo_epi8(x[0], x[1]), b = _mm_unpacklo_epi8(x[2], x[3]);
    const __m128i c = _mm_unpackhi_epi8(x[0], x[1]), e = _mm_unpackhi_epi8(x[2], x[3]);
    const __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(a, b)), _mm_unpackhi_epi16(a, b), 1);
    const __m256i ce = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(c, e)), _mm_unpackhi_epi16(c, e), 1);
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(ab), ce, 1);  // bytes j = 0..15, 4 rows each
    const __m512i mask = _mm512_set1_epi8(0x0F);
    lo = _mm512_and_si512(z, mask);
    hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), mask);
  } else {
    __m256i y[4];
    KVQ_UNROLL
    for (int i = 0; i < 4; ++i) {
      int8_dot::VB v[int8_dot::kGroupVecs];
      fmt.template Int8Codes<1>(r[i], v);
      y[i] = _mm512_castsi512_si256(v[0].raw);  // values 0..31 in order
      // Signed codes (q8_0, turbo's int8 levels) as c + 128 for vpdpbusd's unsigned side; the
      // weights' -128 * sum comes off with the bias (kInt8Bias = 128).
      if constexpr (Fmt::kInt8Signed) y[i] = _mm256_xor_si256(y[i], _mm256_set1_epi8(static_cast<char>(0x80)));
    }
    // In-lane interleaves: 128-bit lane k of u holds values 16k + ...
    const __m256i a = _mm256_unpacklo_epi8(y[0], y[1]), b = _mm256_unpacklo_epi8(y[2], y[3]);
    const __m256i c = _mm256_unpackhi_epi8(y[0], y[1]), e = _mm256_unpackhi_epi8(y[2], y[3]);
    // lanes: (0-3 | 16-19), (4-7 | 20-23), (8-11 | 24-27), (12-15 | 28-31)
    const __m512i p = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_unpacklo_epi16(a, b)), _mm256_unpackhi_epi16(a, b), 1);
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_unpacklo_epi16(c, e)), _mm256_unpackhi_epi16(c, e), 1);
    lo = _mm512_shuffle_i64x2(p, q, 0x88);  // 128-bit lanes 0, 2 of p then of q
    hi = _mm512_shuffle_i64x2(p, q, 0xDD);  // lanes 1, 3
  }
}

// max |x| over two vectors; NaN if any lane is NaN (fpclass, since vmaxps
// drops NaN operands).
HWY_INLINE float MaxAbs(__m512 a, __m512 b) {
  if ((_mm512_fpclass_ps_mask(a, 0x81) | _mm512_fpclass_ps_mask(b, 0x81)) != 0)  // QNaN | SNaN
    return std::numeric_limits<float>::quiet_NaN();
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
}

// Rows t..t+3 of a block (rows past n repeat row n - 1; their weight codes are 0).
template <class Fmt, std::size_t G>
HWY_INLINE void QuadStep(const Fmt& fmt, const std::uint8_t* blk, std::size_t row_bytes, std::size_t n, std::size_t t,
                         const std::int8_t (&qw)[G][kTileRows], __m512i (&a)[G][2]) {
  const std::uint8_t* const r[4] = {blk + t * row_bytes, blk + (t + 1 < n ? t + 1 : n - 1) * row_bytes,
                                    blk + (t + 2 < n ? t + 2 : n - 1) * row_bytes,
                                    blk + (t + 3 < n ? t + 3 : n - 1) * row_bytes};
  __m512i lo, hi;
  QuadCodes<Fmt>(fmt, r, lo, hi);
  KVQ_UNROLL
  for (std::size_t g = 0; g < G; ++g) {
    std::int32_t q4;
    std::memcpy(&q4, qw[g] + t, 4);
    const __m512i bw = _mm512_set1_epi32(q4);
    a[g][0] = Dpbusd(a[g][0], lo, bw);
    a[g][1] = Dpbusd(a[g][1], hi, bw);
  }
}

// The weight codes of one block (or, for row-scale formats, of every block)
// of a tile for G queries: p = w d quantized with the step max|w| max|d| / 127.
template <class Fmt, std::size_t G>
struct WeightCodes {
  alignas(64) std::int8_t qw[G][kTileRows];  // four rows per 32-bit word
  float step[G], msum[G];
  std::int32_t bias[G];

  HWY_INLINE WeightCodes(const __m512 (&wl)[G][2], const float (&wmax)[G], const TileFields& fl) {
    // |p| <= max|w| max|d|: one maximum per query and one per block, not
    // one per (query, block).
    const float dmax = MaxAbs(fl.d[0].raw, fl.d[1].raw);
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      const __m512 p0 = _mm512_mul_ps(wl[g][0], fl.d[0].raw), p1 = _mm512_mul_ps(wl[g][1], fl.d[1].raw);
      const float amax = wmax[g] * dmax;
      // NaN or Inf: the block's result is NaN (step NaN; the codes, narrowed, 0).
      const bool finite = amax <= std::numeric_limits<float>::max();
      const float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
      step[g] = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
      const __m512i c0 = _mm512_cvtps_epi32(_mm512_mul_ps(p0, _mm512_set1_ps(inv)));
      const __m512i c1 = _mm512_cvtps_epi32(_mm512_mul_ps(p1, _mm512_set1_ps(inv)));
      const __m128i q0 = _mm512_cvtepi32_epi8(c0), q1 = _mm512_cvtepi32_epi8(c1);
      _mm_store_si128(reinterpret_cast<__m128i*>(qw[g]), q0);
      _mm_store_si128(reinterpret_cast<__m128i*>(qw[g] + 16), q1);
      // The bias sums the codes as stored: a NaN product converts to INT_MIN,
      // which the narrowing makes 0 (and whose 32-bit sum would overflow).
      bias[g] = -Fmt::kInt8Bias *
                _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_cvtepi8_epi32(q0), _mm512_cvtepi8_epi32(q1)));
      msum[g] = Fmt::kInt8Min ? fl.MinSum(VF{wl[g][0]}, VF{wl[g][1]}) : 0.0f;
    }
  }
};

// Fields of a tile: each block's d (and m) at its start; with a row scale
// (turbo), the row's fp16 alpha times the decoder's RowStep, for every block.
template <class Fmt>
HWY_INLINE TileFields FieldsOf(const Fmt& fmt, const std::uint8_t* at, std::size_t row_bytes, __mmask16 m0,
                               __mmask16 m1) {
  TileFields fl(at, row_bytes, m0, m1);
  if constexpr (Fmt::kRowScale) {
    const VF step = hn::Set(DF(), fmt.step);
    fl.d[0] = hn::Mul(fl.d[0], step);
    fl.d[1] = hn::Mul(fl.d[1], step);
  }
  (void)fmt;
  return fl;
}

template <class Fmt, std::size_t G, std::size_t P>
HWY_INLINE void TileInt8(const Fmt& fmt, const float* HWY_RESTRICT w, std::size_t w_stride,
                         const std::uint8_t* HWY_RESTRICT rows, std::size_t row_bytes, std::size_t n,
                         std::size_t n_blocks, float* HWY_RESTRICT acc, std::size_t acc_stride) {
  const std::size_t quads = (n + 3) / 4;
  __mmask16 m0, m1;
  TileMasks(n, m0, m1);
  __m512 wl[G][2];
  float wmax[G];
  KVQ_UNROLL
  for (std::size_t g = 0; g < G; ++g) {
    wl[g][0] = _mm512_maskz_loadu_ps(m0, w + g * w_stride);
    wl[g][1] = _mm512_maskz_loadu_ps(m1, w + g * w_stride + 16);
    wmax[g] = MaxAbs(wl[g][0], wl[g][1]);
  }
  const auto block = [&](std::size_t b, const WeightCodes<Fmt, G>& wc) HWY_ATTR {
    const std::uint8_t* blk = rows + Fmt::kHeader + b * Fmt::kBytes;
    __m512i a[P][G][2];
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      a[0][g][0] = a[0][g][1] = _mm512_set1_epi32(wc.bias[g]);
      KVQ_UNROLL
      for (std::size_t s = 1; s < P; ++s) a[s][g][0] = a[s][g][1] = _mm512_setzero_si512();
    }
    std::size_t i = 0;
    for (; i + P <= quads; i += P)
      KVQ_UNROLL
      for (std::size_t s = 0; s < P; ++s) QuadStep<Fmt, G>(fmt, blk, row_bytes, n, 4 * (i + s), wc.qw, a[s]);
    for (; i < quads; ++i) QuadStep<Fmt, G>(fmt, blk, row_bytes, n, 4 * i, wc.qw, a[0]);
    KVQ_UNROLL
    for (std::size_t g = 0; g < G; ++g) {
      __m512i lo = a[0][g][0], hi = a[0][g][1];
      KVQ_UNROLL
      for (std::size_t s = 1; s < P; ++s) {
        lo = _mm512_add_epi32(lo, a[s][g][0]);
        hi = _mm512_add_epi32(hi, a[s][g][1]);
      }
      const __m512 st = _mm512_set1_ps(wc.step[g]), m = _mm512_set1_ps(wc.msum[g]);
      float* o = acc + g * acc_stride + b * 32;
      _mm512_storeu_ps(o, _mm512_add_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), st, m), _mm512_loadu_ps(o)));
      _mm512_storeu_ps(o + 16, _mm512_add_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), st, m), _mm512_loadu_ps(o + 16)));
    }
  };
  if constexpr (Fmt::kRowScale) {  // the same scale for every block: weight codes once per tile
    const WeightCodes<Fmt, G> wc(wl, wmax, FieldsOf(fmt, rows, row_bytes, m0, m1));
    for (std::size_t b = 0; b < n_blocks; ++b) block(b, wc);
  } else {
    for (std::size_t b = 0; b < n_blocks; ++b)
      block(b, WeightCodes<Fmt, G>(wl, wmax, FieldsOf(fmt, rows + b * Fmt::kBytes, row_bytes, m0, m1)));
  }
}

enum class Products { bf16, int8 };

template <class Fmt, Products K, std::size_t G, std::size_t P>
HWY_INLINE void Tile(const Fmt& fmt, const float* w, std::size_t w_stride, const std::uint8_t* rows,
                     std::size_t row_bytes, std::size_t n, std::size_t n_blocks, float* acc, std::size_t acc_stride) {
  if constexpr (K == Products::bf16)
    TileBf16<Fmt, G, P>(fmt, w, w_stride, rows, row_bytes, n, n_blocks, acc, acc_stride);
  else
    TileInt8<Fmt, G, P>(fmt, w, w_stride, rows, row_bytes, n, n_blocks, acc, acc_stride);
}

// The row loop: tiles of kTileRows rows, prefetching ahead like the f32
// driver, each tile for the queries in groups of 8, 4, 2, 1 (8 x 2
// accumulators fill half the 32 registers; smaller groups add partials).
template <class Fmt, Products K>
HWY_INLINE void AccumulateRows(const Fmt& fmt, const float* w, std::size_t n_q, std::size_t w_stride,
                               const std::uint8_t* rows, std::size_t n_rows, std::size_t head_dim, float* acc,
                               std::size_t acc_stride) {
  const std::size_t n_blocks = head_dim / 32, row_bytes = Fmt::kHeader + n_blocks * Fmt::kBytes;
  for (std::size_t t = 0; t < n_rows; t += kTileRows) {
    const std::size_t n = n_rows - t < kTileRows ? n_rows - t : kTileRows;
    const std::uint8_t* tile = rows + t * row_bytes;
    PrefetchAhead(tile, n * row_bytes);
    std::size_t g = 0;
    for (; g + 8 <= n_q; g += 8)
      Tile<Fmt, K, 8, 1>(fmt, w + g * w_stride + t, w_stride, tile, row_bytes, n, n_blocks, acc + g * acc_stride,
                         acc_stride);
    for (; g + 4 <= n_q; g += 4)
      Tile<Fmt, K, 4, 1>(fmt, w + g * w_stride + t, w_stride, tile, row_bytes, n, n_blocks, acc + g * acc_stride,
                         acc_stride);
    for (; g + 2 <= n_q; g += 2)
      Tile<Fmt, K, 2, 2>(fmt, w + g * w_stride + t, w_stride, tile, row_bytes, n, n_blocks, acc + g * acc_stride,
                         acc_stride);
    for (; g < n_q; ++g)
      Tile<Fmt, K, 1, 4>(fmt, w + g * w_stride + t, w_stride, tile, row_bytes, n, n_blocks, acc + g * acc_stride,
                         acc_stride);
  }
}
#endif  // HWY_TARGET == HWY_AVX3_DL

template <class Fmt>
HWY_INLINE void AccumulateBf16(const float* w, std::size_t n_q, std::size_t w_stride, const std::byte* rows,
                               std::size_t n_rows, std::size_t head_dim, float* acc, std::size_t acc_stride) {
#if KVQ_BF16_ACCUMULATE
#if KVQ_AMX_ACCUMULATE
  if (n_q >= kAmxMinGroup && CpuHasAmxBf16())
    return AccumulateAmx<Fmt>(Fmt(), w, n_q, w_stride, reinterpret_cast<const std::uint8_t*>(rows), n_rows, head_dim,
                              acc, acc_stride);
#endif
  if (CpuHasBf16())
    return AccumulateRows<Fmt, Products::bf16>(Fmt(), w, n_q, w_stride, reinterpret_cast<const std::uint8_t*>(rows),
                                               n_rows, head_dim, acc, acc_stride);
#endif
  row_kernels::Accumulate(Fmt(), w, n_q, w_stride, rows, n_rows, head_dim, acc, acc_stride);
}

// int8 products with the int8 decoder fmt; elsewhere rows-inl.h's f32
// Accumulate with the decoder f32 (of the same rows).
template <class Fmt, class F32Fmt>
HWY_INLINE void AccumulateInt8(const Fmt& fmt, const F32Fmt& f32, const float* w, std::size_t n_q,
                               std::size_t w_stride, const std::byte* rows, std::size_t n_rows, std::size_t head_dim,
                               float* acc, std::size_t acc_stride) {
#if KVQ_BF16_ACCUMULATE
  (void)f32;
  return AccumulateRows<Fmt, Products::int8>(fmt, w, n_q, w_stride, reinterpret_cast<const std::uint8_t*>(rows),
                                             n_rows, head_dim, acc, acc_stride);
#else
  (void)fmt;
  row_kernels::Accumulate(f32, w, n_q, w_stride, rows, n_rows, head_dim, acc, acc_stride);
#endif
}

// Which path AccumulateBf16 takes on this target and CPU: 0 f32, 1 bf16 dot
// products, 2 bf16 dot products for single queries and AMX tiles for groups.
inline std::int64_t Bf16Active() {
#if KVQ_BF16_ACCUMULATE
#if KVQ_AMX_ACCUMULATE
  if (CpuHasAmxBf16()) return 2;
#endif
  return CpuHasBf16() ? 1 : 0;
#else
  return 0;
#endif
}

}  // namespace value_products

#undef KVQ_BF16_ACCUMULATE_ENTRY_POINT
#define KVQ_BF16_ACCUMULATE_ENTRY_POINT(NS, FMT)                                                               \
  inline void AccumulateBf16##FMT(const float* w, std::size_t n_q, std::size_t w_stride, const std::byte* rows, \
                                  std::size_t n_rows, std::size_t head_dim, float* acc, std::size_t acc_stride) { \
    value_products::AccumulateBf16<NS::FMT>(w, n_q, w_stride, rows, n_rows, head_dim, acc, acc_stride);       \
  }
KVQ_BF16_ACCUMULATE_ENTRY_POINT(uniform, Q8_0)
KVQ_BF16_ACCUMULATE_ENTRY_POINT(uniform, Q4_0)
KVQ_BF16_ACCUMULATE_ENTRY_POINT(uniform, Q4_1)
KVQ_BF16_ACCUMULATE_ENTRY_POINT(uniform, Q3_1)
KVQ_BF16_ACCUMULATE_ENTRY_POINT(uniform, Q2_1)

#undef KVQ_INT8_ACCUMULATE_ENTRY_POINT
#define KVQ_INT8_ACCUMULATE_ENTRY_POINT(NS, FMT)                                                               \
  inline void AccumulateInt8##FMT(const float* w, std::size_t n_q, std::size_t w_stride, const std::byte* rows, \
                                  std::size_t n_rows, std::size_t head_dim, float* acc, std::size_t acc_stride) { \
    value_products::AccumulateInt8(NS::FMT(), NS::FMT(), w, n_q, w_stride, rows, n_rows, head_dim, acc, acc_stride); \
  }
KVQ_INT8_ACCUMULATE_ENTRY_POINT(uniform, Q4_0)
KVQ_INT8_ACCUMULATE_ENTRY_POINT(uniform, Q4_1)
KVQ_INT8_ACCUMULATE_ENTRY_POINT(uniform, Q3_1)
KVQ_INT8_ACCUMULATE_ENTRY_POINT(uniform, Q2_1)
KVQ_INT8_ACCUMULATE_ENTRY_POINT(uniform, Q8_0)

inline std::int64_t Bf16AccumulateActive() { return value_products::Bf16Active(); }

}  // namespace HWY_NAMESPACE
}  // namespace kvq::kernels
HWY_AFTER_NAMESPACE();

#endif  // KVQ_KERNELS_VALUE_PRODUCTS_INL_H_

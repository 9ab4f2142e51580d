// `kvq turboquality`: the measurements behind the turbo codecs, printed as the
// markdown tables of docs/QUALITY.md ("Turbo codecs").
//
//  1. MSE of random unit vectors (d = 128) at 1..4 bits next to the codebook's
//     own MSE and TurboQuant's published D_mse (arXiv 2504.19874, Theorem 1).
//  2. The scale study that chose what a turbo row stores: fp16 or fp32 |x|,
//     the norm-corrected |x|/|L[idx]|, the least-squares scale and the
//     inner-product-preserving scale, on unit vectors and on the real K/V dumps;
//     plus a simulated TurboQuant_prod ((b-1)-bit MSE code + 1-bit QJL sign of
//     the residual) for K, to decide whether a QJL bit is worth spending.
//  3. Per layer, on the real dumps: relative error of K, V, the attention
//     scores and the attention output, for every registered codec.
//
// Attention on the dumps: query head h uses KV head h / (n_heads / n_kv_heads),
// scores q.k / sqrt(d), causal, at every --stride-th query position (the last
// position of each stride window, so t = T-1 is included).
#include "cli.hpp"

#include <kvq/codec/lloyd_max.hpp>
#include <kvq/codec/registry.hpp>
#include <kvq/codec/turbo.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>
#include <kvq/reference/turbo.hpp>
#include <kvq/rotation/rotation.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace {

// --- minimal float16 .npy reader (format 1.0, C order, '<f2') --------------
// Private to this tool; a shared tools/common/npy.hpp reader is planned.
struct Array {
  std::vector<std::size_t> shape;
  std::vector<float> data;
};

Array load_npy_f16(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  kvq::detail::require(static_cast<bool>(f), kvq::Errc::io_error, "cannot open " + path);
  char magic[8];
  f.read(magic, 8);
  kvq::detail::require(f && std::memcmp(magic, "\x93NUMPY", 6) == 0 && magic[6] == 1, kvq::Errc::corrupt_data,
                       path + ": not a .npy file of format 1.x");
  unsigned char len[2];
  f.read(reinterpret_cast<char*>(len), 2);
  std::string header(len[0] | (len[1] << 8), '\0');
  f.read(header.data(), static_cast<std::streamsize>(header.size()));
  kvq::detail::require(static_cast<bool>(f), kvq::Errc::corrupt_data, path + ": truncated header");
  kvq::detail::require(header.find("'<f2'") != std::string::npos && header.find("'fortran_order': False") != std::string::npos,
                       kvq::Errc::unsupported, path + ": expected little-endian float16 in C order");
  Array a;
  const auto open = header.find('(', header.find("'shape'"));
  const auto close = header.find(')', open);
  kvq::detail::require(open != std::string::npos && close != std::string::npos, kvq::Errc::corrupt_data,
                       path + ": no shape in header");
  std::size_t count = 1;
  for (std::size_t p = open + 1; p < close;) {
    while (p < close && (header[p] == ' ' || header[p] == ',')) ++p;
    if (p >= close) break;
    std::size_t n = 0;
    while (p < close && header[p] >= '0' && header[p] <= '9') n = n * 10 + static_cast<std::size_t>(header[p++] - '0');
    a.shape.push_back(n);
    count *= n;
  }
  std::vector<std::uint16_t> raw(count);
  f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(count * 2));
  kvq::detail::require(static_cast<bool>(f), kvq::Errc::corrupt_data, path + ": truncated data");
  a.data.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    const auto* b = reinterpret_cast<const unsigned char*>(&raw[i]);
    a.data[i] = kvq::half_bits_to_float(static_cast<std::uint16_t>(b[0] | (b[1] << 8)));
  }
  return a;
}

// --- a row reconstruction under test: x -> x^ ------------------------------
using Reconstruct = std::function<void(const float* x, float* y)>;

Reconstruct through_codec(const kvq::AnyCodec& c) {
  return [c](const float* x, float* y) {
    std::vector<std::byte> tile(c.bytes_per_tile());
    c.encode_tile(x, tile.data());
    c.decode_tile(tile.data(), y);
  };
}

// What a turbo row could store as its scale alpha (decode = R^-1 alpha L[idx]).
enum class Scale {
  norm_fp16,       // |x| in fp16, alpha = |x| / sqrt(d)   (TurboQuant as published)
  norm_fp32,       // |x| in fp32
  corrected_fp16,  // alpha = |x| / |L[idx]| in fp16: reconstruction keeps |x| (kvq's choice)
  corrected_fp32,
  lsq_fp16,        // alpha = <y, L[idx]> / |L[idx]|^2: least reconstruction error for these indices
  ip_fp16,         // alpha = |x|^2 / <y, L[idx]>: x^ . x = |x|^2 exactly
};
constexpr Scale kScales[] = {Scale::norm_fp16, Scale::norm_fp32, Scale::corrected_fp16,
                             Scale::corrected_fp32, Scale::lsq_fp16, Scale::ip_fp16};
const char* scale_name(Scale s) {
  switch (s) {
    case Scale::norm_fp16: return "norm fp16: |x|/sqrt(d)";
    case Scale::norm_fp32: return "norm fp32: |x|/sqrt(d)";
    case Scale::corrected_fp16: return "**corrected fp16: |x|/|c|**";
    case Scale::corrected_fp32: return "corrected fp32: |x|/|c|";
    case Scale::lsq_fp16: return "least-squares fp16: <y,c>/|c|^2";
    case Scale::ip_fp16: return "ip-preserving fp16: |x|^2/<y,c>";
  }
  return "?";
}

template <unsigned Bits>
Reconstruct turbo_variant(std::size_t dim, Scale scale) {
  auto codec = std::make_shared<kvq::Turbo<Bits>>(dim);
  return [codec, dim, scale](const float* x, float* out) {
    const auto& L = codec->levels();
    std::vector<float> y(dim);
    std::vector<std::uint8_t> idx(dim);
    double n2 = 0;
    for (std::size_t i = 0; i < dim; ++i) n2 += double(x[i]) * x[i];
    const double norm = std::sqrt(n2);
    if (norm == 0) {
      std::fill(out, out + dim, 0.0f);
      return;
    }
    codec->rotation().forward(x, y.data());
    kvq::reference::turbo_indices<Bits>(y.data(), norm, dim, codec->thresholds().data(), idx.data());
    double c2 = 0, yc = 0;
    for (std::size_t i = 0; i < dim; ++i) {
      c2 += double(L[idx[i]]) * L[idx[i]];
      yc += double(y[i]) * L[idx[i]];
    }
    double alpha = 0;
    bool half = true;
    switch (scale) {
      case Scale::norm_fp16: alpha = kvq::round_to_half(float(norm)) / std::sqrt(double(dim)); break;
      case Scale::norm_fp32: alpha = float(norm) / std::sqrt(double(dim)); half = false; break;
      case Scale::corrected_fp16: alpha = norm / std::sqrt(c2); break;
      case Scale::corrected_fp32: alpha = norm / std::sqrt(c2); half = false; break;
      case Scale::lsq_fp16: alpha = yc / c2; break;
      case Scale::ip_fp16: alpha = n2 / yc; break;
    }
    const float a = scale == Scale::norm_fp16 ? float(alpha)
                    : half                    ? kvq::round_to_half(float(alpha))
                                              : float(alpha);
    for (std::size_t i = 0; i < dim; ++i) y[i] = a * L[idx[i]];
    codec->rotation().inverse(y.data(), out);
  };
}

Reconstruct turbo_variant(unsigned bits, std::size_t dim, Scale s) {
  switch (bits) {
    case 1: return turbo_variant<1>(dim, s);
    case 2: return turbo_variant<2>(dim, s);
    case 3: return turbo_variant<3>(dim, s);
    default: return turbo_variant<4>(dim, s);
  }
}

// TurboQuant_prod at `bits` total: (bits-1)-bit turbo MSE code with |x| scale
// (as published), then r = x - x^mse, stored as |r| (fp16) and sign(S r) with S
// a d x d standard Gaussian matrix. Its inner-product estimate
// q.x^mse + |r| sqrt(pi/2)/d <S q, sign(S r)> is linear in q, so it equals q.x~
// for x~ = x^mse + |r| sqrt(pi/2)/d S^T sign(S r): the reconstruction returned.
Reconstruct turbo_prod(unsigned bits, std::size_t dim) {
  Reconstruct mse = turbo_variant(bits - 1, dim, Scale::norm_fp16);
  auto S = std::make_shared<std::vector<float>>(dim * dim);
  kvq::Rng rng(0x514A4C);
  for (auto& v : *S) v = static_cast<float>(rng.normal());
  return [mse, S, dim](const float* x, float* out) {
    mse(x, out);
    std::vector<float> r(dim), z(dim);
    double r2 = 0;
    for (std::size_t i = 0; i < dim; ++i) {
      r[i] = x[i] - out[i];
      r2 += double(r[i]) * r[i];
    }
    for (std::size_t i = 0; i < dim; ++i) {
      double s = 0;
      for (std::size_t j = 0; j < dim; ++j) s += double((*S)[i * dim + j]) * r[j];
      z[i] = s >= 0 ? 1.0f : -1.0f;
    }
    const double gamma = kvq::round_to_half(float(std::sqrt(r2))) * std::sqrt(std::acos(-1.0) / 2) / double(dim);
    for (std::size_t j = 0; j < dim; ++j) {
      double s = 0;
      for (std::size_t i = 0; i < dim; ++i) s += double((*S)[i * dim + j]) * z[i];
      out[j] += float(gamma * s);
    }
  };
}

// --- the real dumps ----------------------------------------------------------
struct Dumps {
  Array q, k, v;
  std::size_t layers = 0, hq = 0, hkv = 0, T = 0, d = 0;
  const float* q_at(std::size_t l, std::size_t h) const { return q.data.data() + ((l * hq + h) * T) * d; }
  const float* k_at(std::size_t l, std::size_t h) const { return k.data.data() + ((l * hkv + h) * T) * d; }
  const float* v_at(std::size_t l, std::size_t h) const { return v.data.data() + ((l * hkv + h) * T) * d; }
};

// Exact attention of one layer at the sampled positions, computed once.
struct LayerReference {
  std::vector<float> scores;  // per (head, sampled t): t+1 scores, concatenated
  std::vector<float> outputs; // per (head, sampled t): d values
};

struct Sums {
  double err2 = 0, ref2 = 0, cross = 0;  // sum (a-b)^2, sum a^2, sum a*b
  void add(double ref, double approx) {
    err2 += (ref - approx) * (ref - approx);
    ref2 += ref * ref;
    cross += ref * approx;
  }
  double rel() const { return ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0; }
  double slope() const { return ref2 > 0 ? cross / ref2 : 0.0; }
  void merge(const Sums& o) {
    err2 += o.err2;
    ref2 += o.ref2;
    cross += o.cross;
  }
};

struct AttentionError {
  Sums scores, output;
};

// Softmax attention of query q over keys/values 0..t (rows of d floats).
void attend(const float* q, const float* K, const float* V, std::size_t t, std::size_t d, float* s, float* o) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  float m = -INFINITY;
  for (std::size_t j = 0; j <= t; ++j) {
    float acc = 0;
    for (std::size_t i = 0; i < d; ++i) acc += q[i] * K[j * d + i];
    s[j] = acc * scale;
    m = std::max(m, s[j]);
  }
  std::fill(o, o + d, 0.0f);
  double z = 0;
  for (std::size_t j = 0; j <= t; ++j) {
    const float p = std::exp(s[j] - m);
    z += p;
    for (std::size_t i = 0; i < d; ++i) o[i] += p * V[j * d + i];
  }
  for (std::size_t i = 0; i < d; ++i) o[i] = static_cast<float>(o[i] / z);
}

std::vector<std::size_t> sampled_positions(std::size_t T, std::size_t stride) {
  std::vector<std::size_t> ts;
  for (std::size_t t = stride - 1; t < T; t += stride) ts.push_back(t);
  return ts;
}

LayerReference layer_reference(const Dumps& D, std::size_t l, std::size_t stride) {
  LayerReference ref;
  std::vector<float> o(D.d);
  for (std::size_t h = 0; h < D.hq; ++h) {
    const std::size_t kv = h / (D.hq / D.hkv);
    for (std::size_t t : sampled_positions(D.T, stride)) {
      const std::size_t at = ref.scores.size();
      ref.scores.resize(at + t + 1);
      attend(D.q_at(l, h) + t * D.d, D.k_at(l, kv), D.v_at(l, kv), t, D.d, ref.scores.data() + at, o.data());
      ref.outputs.insert(ref.outputs.end(), o.begin(), o.end());
    }
  }
  return ref;
}

// Attention error of a layer when K and V are replaced by Kh, Vh ([hkv][T][d]).
AttentionError layer_error(const Dumps& D, std::size_t l, std::size_t stride, const LayerReference& ref,
                           const std::vector<float>& Kh, const std::vector<float>& Vh) {
  AttentionError e;
  std::vector<float> s(D.T), o(D.d);
  std::size_t si = 0, oi = 0;
  for (std::size_t h = 0; h < D.hq; ++h) {
    const std::size_t kv = h / (D.hq / D.hkv);
    for (std::size_t t : sampled_positions(D.T, stride)) {
      attend(D.q_at(l, h) + t * D.d, Kh.data() + kv * D.T * D.d, Vh.data() + kv * D.T * D.d, t, D.d, s.data(), o.data());
      for (std::size_t j = 0; j <= t; ++j) e.scores.add(ref.scores[si + j], s[j]);
      for (std::size_t i = 0; i < D.d; ++i) e.output.add(ref.outputs[oi + i], o[i]);
      si += t + 1;
      oi += D.d;
    }
  }
  return e;
}

// x^ for every row of a layer's [hkv][T][d] block, and the relative error.
std::vector<float> reconstruct_layer(const Reconstruct& f, const float* x, std::size_t rows, std::size_t d, Sums& err) {
  std::vector<float> y(rows * d);
  for (std::size_t r = 0; r < rows; ++r) {
    f(x + r * d, y.data() + r * d);
    for (std::size_t i = 0; i < d; ++i) err.add(x[r * d + i], y[r * d + i]);
  }
  return y;
}

// --- section 1: unit vectors -------------------------------------------------
template <unsigned Bits>
double unit_mse(std::size_t dim, int trials) {
  const kvq::Turbo<Bits> codec(dim);
  kvq::Rng rng(2025);
  std::vector<float> x(dim), y(dim);
  std::vector<std::byte> tile(codec.bytes_per_tile());
  double total = 0;
  for (int t = 0; t < trials; ++t) {
    double n2 = 0;
    for (auto& v : x) {
      v = static_cast<float>(rng.normal());
      n2 += double(v) * v;
    }
    for (auto& v : x) v = static_cast<float>(v / std::sqrt(n2));
    codec.encode_tile(x.data(), tile.data());
    codec.decode_tile(tile.data(), y.data());
    for (std::size_t i = 0; i < dim; ++i) total += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  }
  return total / trials;
}

// Unit vectors through a scale variant: MSE, mean |x^|/|x|, and the inner
// product with an independent Gaussian q: slope (E q.x^ / q.x) and relative error.
struct UnitStats {
  double mse = 0, norm_ratio = 0;
  Sums ip;
};
UnitStats unit_variant(const Reconstruct& f, std::size_t dim, int trials) {
  kvq::Rng rng(77);
  std::vector<float> x(dim), y(dim), q(dim);
  UnitStats s;
  for (int t = 0; t < trials; ++t) {
    double n2 = 0;
    for (auto& v : x) {
      v = static_cast<float>(rng.normal());
      n2 += double(v) * v;
    }
    for (auto& v : x) v = static_cast<float>(v / std::sqrt(n2));
    for (auto& v : q) v = static_cast<float>(rng.normal());
    f(x.data(), y.data());
    double e = 0, y2 = 0, qx = 0, qy = 0;
    for (std::size_t i = 0; i < dim; ++i) {
      e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
      y2 += double(y[i]) * y[i];
      qx += double(q[i]) * x[i];
      qy += double(q[i]) * y[i];
    }
    s.mse += e / trials;
    s.norm_ratio += std::sqrt(y2) / trials;
    s.ip.add(qx, qy);
  }
  return s;
}

int run(const kvq::cli::Args& args) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string dir = args.get("dumps", std::string(KVQ_SHARED_DIR) + "/data/kv-dumps/wt2-byte-a");
  const auto stride = static_cast<std::size_t>(args.get_int("stride", 16));
  const auto study_stride = static_cast<std::size_t>(args.get_int("study-stride", 64));
  const int trials = static_cast<int>(args.get_int("trials", 20000));
  kvq::detail::require(stride >= 1 && study_stride >= 1 && trials >= 1, kvq::Errc::invalid_argument,
                       "--stride, --study-stride and --trials must be >= 1");

  // 1. Unit vectors, d = 128.
  std::printf("### Unit vectors, d = 128 (%d random unit vectors per row)\n\n", trials);
  std::printf("| bits | kvq turbo codec (scale |x|/|c|) | TurboQuant_mse (scale |x|, fp32) | codebook MSE (sphere, d=128) | TurboQuant paper D_mse | bound sqrt(3)pi/2 / 4^b |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|\n");
  const double paper[] = {0.36, 0.117, 0.03, 0.009};
  const double measured[] = {unit_mse<1>(128, trials), unit_mse<2>(128, trials), unit_mse<3>(128, trials),
                             unit_mse<4>(128, trials)};
  for (int b = 1; b <= 4; ++b)
    std::printf("| %d | %.5f | %.5f | %.5f | %.3f | %.4f |\n", b, measured[b - 1],
                unit_variant(turbo_variant(static_cast<unsigned>(b), 128, Scale::norm_fp32), 128, trials).mse,
                kvq::lloyd_max_sphere(b, 128).mse,
                paper[b - 1], std::sqrt(3.0) * std::acos(-1.0) / 2 / std::pow(4.0, b));

  std::printf("\n### Scale stored per row: unit vectors, d = 128 (q: independent Gaussian)\n\n");
  std::printf("| bits | scale | E|x - x^|^2 | E|x^| | q.x^ vs q.x: slope | rel. error |\n|---:|---|---:|---:|---:|---:|\n");
  for (unsigned b = 2; b <= 4; ++b)
    for (Scale s : kScales) {
      const UnitStats u = unit_variant(turbo_variant(b, 128, s), 128, trials / 4);
      std::printf("| %u | %s | %.5f | %.4f | %.4f | %.4f |\n", b, scale_name(s), u.mse, u.norm_ratio, u.ip.slope(), u.ip.rel());
    }

  // 2./3. Real dumps.
  Dumps D;
  try {
    D.q = load_npy_f16(dir + "/q.npy");
    D.k = load_npy_f16(dir + "/k.npy");
    D.v = load_npy_f16(dir + "/v.npy");
  } catch (const kvq::Error& e) {
    std::printf("\n(real-dump sections skipped: %s)\n", e.what());
    return 0;
  }
  kvq::detail::require(D.q.shape.size() == 4 && D.k.shape == D.v.shape && D.k.shape.size() == 4 &&
                           D.q.shape[0] == D.k.shape[0] && D.q.shape[2] == D.k.shape[2] && D.q.shape[3] == D.k.shape[3] &&
                           D.q.shape[1] % D.k.shape[1] == 0,
                       kvq::Errc::shape_mismatch, "dumps: q/k/v shapes do not fit [layers, heads, T, d]");
  D.layers = D.k.shape[0];
  D.hq = D.q.shape[1];
  D.hkv = D.k.shape[1];
  D.T = D.k.shape[2];
  D.d = D.k.shape[3];
  const std::size_t rows = D.hkv * D.T;

  std::printf("\n### Scale stored per row: real K/V (%s, all %zu layers, queries every %zu-th position)\n\n",
              dir.c_str(), D.layers, study_stride);
  std::printf("K-only: K replaced by x^, V exact; V-only: the reverse. Errors are relative RMS over all layers; "
              "score slope = sum(s s^)/sum(s^2) (1 = unbiased scale).\n\n");
  std::printf("| bits | scale | K rel. err | score rel. err | score slope | out err (K only) | V rel. err | out err (V only) |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|\n");
  std::vector<LayerReference> study_ref;
  for (std::size_t l = 0; l < D.layers; ++l) study_ref.push_back(layer_reference(D, l, study_stride));
  auto study_row = [&](const std::string& label, unsigned b, const Reconstruct& fk, const Reconstruct* fv) {
    Sums kerr, verr, sc, outk, outv;
    for (std::size_t l = 0; l < D.layers; ++l) {
      const std::vector<float> K(D.k_at(l, 0), D.k_at(l, 0) + rows * D.d), V(D.v_at(l, 0), D.v_at(l, 0) + rows * D.d);
      const auto Kh = reconstruct_layer(fk, K.data(), rows, D.d, kerr);
      const AttentionError ek = layer_error(D, l, study_stride, study_ref[l], Kh, V);
      sc.merge(ek.scores);
      outk.merge(ek.output);
      if (fv) {
        const auto Vh = reconstruct_layer(*fv, V.data(), rows, D.d, verr);
        outv.merge(layer_error(D, l, study_stride, study_ref[l], K, Vh).output);
      }
    }
    if (fv)
      std::printf("| %u | %s | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f |\n", b, label.c_str(), kerr.rel(), sc.rel(),
                  sc.slope(), outk.rel(), verr.rel(), outv.rel());
    else
      std::printf("| %u | %s | %.4f | %.4f | %.4f | %.4f | | |\n", b, label.c_str(), kerr.rel(), sc.rel(), sc.slope(),
                  outk.rel());
  };
  for (unsigned b = 2; b <= 4; ++b) {
    for (Scale s : kScales) {
      const Reconstruct f = turbo_variant(b, D.d, s);
      study_row(scale_name(s), b, f, &f);
    }
    study_row("TurboQuant_prod: (b-1)-bit MSE + 1-bit QJL (+16 bits |r|)", b, turbo_prod(b, D.d), nullptr);
  }

  // 3. Per layer, every registered codec.
  std::vector<kvq::AnyCodec> codecs;
  for (const auto& info : kvq::codec_table())
    if (info.make(D.d).tokens_per_tile() == 1) codecs.push_back(info.make(D.d));
  std::printf("\n### Per layer, real K/V (head_dim %zu, queries every %zu-th position: %zu per head)\n\n", D.d, stride,
              sampled_positions(D.T, stride).size());
  std::vector<std::vector<double>> kerr(D.layers), verr(D.layers), serr(D.layers), oerr(D.layers);
  for (std::size_t l = 0; l < D.layers; ++l) {
    const LayerReference ref = layer_reference(D, l, stride);
    for (const auto& c : codecs) {
      Sums ks, vs;
      const auto Kh = reconstruct_layer(through_codec(c), D.k_at(l, 0), rows, D.d, ks);
      const auto Vh = reconstruct_layer(through_codec(c), D.v_at(l, 0), rows, D.d, vs);
      const AttentionError e = layer_error(D, l, stride, ref, Kh, Vh);
      kerr[l].push_back(ks.rel());
      verr[l].push_back(vs.rel());
      serr[l].push_back(e.scores.rel());
      oerr[l].push_back(e.output.rel());
    }
  }
  auto table = [&](const char* title, const std::vector<std::vector<double>>& m) {
    std::printf("%s\n\n| layer |", title);
    for (const auto& c : codecs) std::printf(" %s |", std::string(c.name()).c_str());
    std::printf("\n|---:|");
    for (std::size_t i = 0; i < codecs.size(); ++i) std::printf("---:|");
    std::printf("\n| bits/value |");
    for (const auto& c : codecs) std::printf(" %.3f |", c.bits_per_value());
    std::printf("\n");
    std::vector<double> mean(codecs.size(), 0.0);
    for (std::size_t l = 0; l < D.layers; ++l) {
      std::printf("| %zu |", l);
      for (std::size_t i = 0; i < codecs.size(); ++i) {
        std::printf(" %.4f |", m[l][i]);
        mean[i] += m[l][i] / D.layers;
      }
      std::printf("\n");
    }
    std::printf("| mean |");
    for (double v : mean) std::printf(" %.4f |", v);
    std::printf("\n\n");
  };
  table("Relative RMS error of K", kerr);
  table("Relative RMS error of V", verr);
  table("Relative RMS error of the attention scores q.k/sqrt(d) (K compressed)", serr);
  table("Relative RMS error of the attention output softmax(qK^T/sqrt(d))V (K and V compressed)", oerr);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("(%.1f s)\n", secs);
  return 0;
}

const kvq::cli::Command reg{"turboquality",
                            "[--dumps DIR] [--stride N] [--study-stride N] [--trials N]: turbo codec quality tables (docs/QUALITY.md)",
                            run};
}  // namespace

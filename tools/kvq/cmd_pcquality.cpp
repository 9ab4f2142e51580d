// kvq pcquality: measures per-channel K (pc4/pc3/pc2 at G = 32/64/128) against
// per-token uniform codecs (q4_0, q4_1, q3_1, q2_1) on the real Q/K/V dumps and
// on a synthetic K with per-channel biases and outlier channels, and prints the
// markdown tables of docs/QUALITY.md ("Per-channel K").
//
// Only K is compressed; V stays exact, so the attention-output error is the
// error that K quantization alone causes. Scores q.k/sqrt(d) are causal, and a
// sample of query positions (--queries per head, evenly spread) keeps the run
// under a minute. Every key is compressed, including the newest partial tile a
// streaming cache would still hold exactly: the conservative comparison.
#include "cli.hpp"

#include <kvq/codec/registry.hpp>
#include <kvq/core/half.hpp>
#include <kvq/core/rng.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

// A minimal float16 .npy reader (C order, little-endian '<f2' only). Private to
// this tool until the shared tools/common/npy.hpp lands.
struct Array {
  std::vector<std::size_t> shape;
  std::vector<float> data;
};

Array load_f16_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  kvq::detail::require(static_cast<bool>(f), kvq::Errc::io_error, "cannot open " + path);
  char magic[8];
  f.read(magic, 8);
  kvq::detail::require(f && std::string(magic, 6) == "\x93NUMPY", kvq::Errc::corrupt_data, path + ": not a .npy file");
  std::size_t hlen = 0;
  unsigned char b[4] = {};
  if (magic[6] == 1) {
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (b[1] << 8);
  } else {
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (std::size_t{b[3]} << 24);
  }
  std::string header(hlen, '\0');
  f.read(header.data(), static_cast<std::streamsize>(hlen));
  kvq::detail::require(f && header.find("'<f2'") != std::string::npos &&
                           header.find("'fortran_order': False") != std::string::npos,
                       kvq::Errc::unsupported, path + ": expected a C-order little-endian float16 array");
  Array a;
  std::size_t pos = header.find('(', header.find("'shape'"));
  const std::size_t end = header.find(')', pos);
  kvq::detail::require(pos != std::string::npos && end != std::string::npos, kvq::Errc::corrupt_data, path + ": no shape");
  for (++pos; pos < end;) {
    while (pos < end && (header[pos] == ' ' || header[pos] == ',')) ++pos;
    if (pos >= end) break;
    std::size_t n = 0;
    while (pos < end && header[pos] >= '0' && header[pos] <= '9') n = n * 10 + static_cast<std::size_t>(header[pos++] - '0');
    a.shape.push_back(n);
  }
  std::size_t count = 1;
  for (auto n : a.shape) count *= n;
  std::vector<std::uint16_t> raw(count);
  f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(2 * count));
  kvq::detail::require(static_cast<bool>(f), kvq::Errc::corrupt_data, path + ": truncated data");
  a.data.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    const auto* p = reinterpret_cast<const unsigned char*>(&raw[i]);
    a.data[i] = kvq::half_bits_to_float(static_cast<std::uint16_t>(p[0] | (p[1] << 8)));
  }
  return a;
}

// Encode and decode a [T, D] matrix with `codec`, tile by tile (T a multiple of G).
std::vector<float> roundtrip(const kvq::AnyCodec& codec, const float* x, std::size_t T, std::size_t D) {
  std::vector<float> y(T * D);
  std::vector<std::byte> tile(codec.bytes_per_tile());
  const std::size_t g = codec.tokens_per_tile();
  for (std::size_t t = 0; t < T; t += g) {
    codec.encode_tile(x + t * D, tile.data());
    codec.decode_tile(tile.data(), y.data() + t * D);
  }
  return y;
}

struct Errors {
  double k_num = 0, k_den = 0;        // sum |K - K^|^2, sum |K|^2
  double s_num = 0, s_cnt = 0;        // sum (score error)^2, count
  double o_num = 0, o_den = 0;        // sum |o - o^|^2, sum |o|^2
  double k_rel() const { return std::sqrt(k_num / k_den); }
  double s_rms() const { return std::sqrt(s_num / s_cnt); }
  double o_rel() const { return std::sqrt(o_num / o_den); }
};

// Causal attention of query rows at `positions` over keys K (exact) and Kh
// (compressed), values V exact: accumulates score and output errors.
void attention_errors(const float* q, const float* K, const float* Kh, const float* V, std::size_t D,
                      const std::vector<std::size_t>& positions, std::size_t q_stride, Errors& e) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<float> s, sh;
  std::vector<double> o(D), oh(D);
  for (std::size_t p : positions) {
    const float* qp = q + p * q_stride;
    s.resize(p + 1);
    sh.resize(p + 1);
    for (std::size_t j = 0; j <= p; ++j) {
      float a = 0, b = 0;
      for (std::size_t c = 0; c < D; ++c) {
        a += qp[c] * K[j * D + c];
        b += qp[c] * Kh[j * D + c];
      }
      s[j] = a * scale;
      sh[j] = b * scale;
      e.s_num += double(sh[j] - s[j]) * (sh[j] - s[j]);
    }
    e.s_cnt += static_cast<double>(p + 1);
    const float m = *std::max_element(s.begin(), s.end()), mh = *std::max_element(sh.begin(), sh.end());
    double z = 0, zh = 0;
    std::fill(o.begin(), o.end(), 0.0);
    std::fill(oh.begin(), oh.end(), 0.0);
    for (std::size_t j = 0; j <= p; ++j) {
      const double w = std::exp(double(s[j] - m)), wh = std::exp(double(sh[j] - mh));
      z += w;
      zh += wh;
      for (std::size_t c = 0; c < D; ++c) {
        o[c] += w * V[j * D + c];
        oh[c] += wh * V[j * D + c];
      }
    }
    for (std::size_t c = 0; c < D; ++c) {
      const double a = o[c] / z, b = oh[c] / zh;
      e.o_num += (a - b) * (a - b);
      e.o_den += a * a;
    }
  }
}

const std::vector<std::string> kCodecs = {"q4_0",    "q4_1",    "q3_1", "q2_1",    "pc4/g32", "pc4/g64", "pc4/g128",
                                          "pc3/g32", "pc3/g64", "pc3/g128", "pc2/g32", "pc2/g64", "pc2/g128"};

int run(const kvq::cli::Args& args) {
  const std::string dir = args.get("data", std::string(KVQ_SHARED_DIR) + "/data/kv-dumps/wt2-byte-a");
  const auto nq = static_cast<std::size_t>(args.get_int("queries", 64));
  kvq::detail::require(nq >= 1 && nq <= 4096, kvq::Errc::invalid_argument, "--queries must be in 1..4096");
  const Array Q = load_f16_npy(dir + "/q.npy"), K = load_f16_npy(dir + "/k.npy"), V = load_f16_npy(dir + "/v.npy");
  kvq::detail::require(Q.shape.size() == 4 && K.shape.size() == 4 && K.shape == V.shape && Q.shape[0] == K.shape[0] &&
                           Q.shape[2] == K.shape[2] && Q.shape[3] == K.shape[3] && Q.shape[1] % K.shape[1] == 0,
                       kvq::Errc::shape_mismatch, "q/k/v.npy must be [layers, heads, T, head_dim] with GQA heads");
  const std::size_t L = K.shape[0], Hq = Q.shape[1], Hk = K.shape[1], T = K.shape[2], D = K.shape[3];
  const std::size_t group = Hq / Hk;
  std::vector<std::size_t> positions;
  for (std::size_t i = 0; i < nq; ++i) positions.push_back((i + 1) * T / nq - 1);

  std::vector<std::vector<Errors>> err(kCodecs.size(), std::vector<Errors>(L));
  std::vector<double> bpv(kCodecs.size());
  for (std::size_t ci = 0; ci < kCodecs.size(); ++ci) {
    const kvq::AnyCodec codec = kvq::make_codec(kCodecs[ci], D);
    bpv[ci] = codec.bits_per_value();
    for (std::size_t l = 0; l < L; ++l) {
      for (std::size_t h = 0; h < Hk; ++h) {
        const float* k = K.data.data() + (l * Hk + h) * T * D;
        const float* v = V.data.data() + (l * Hk + h) * T * D;
        const std::vector<float> kh = roundtrip(codec, k, T, D);
        for (std::size_t i = 0; i < T * D; ++i) {
          err[ci][l].k_num += double(k[i] - kh[i]) * (k[i] - kh[i]);
          err[ci][l].k_den += double(k[i]) * k[i];
        }
        for (std::size_t qh = h * group; qh < (h + 1) * group; ++qh)
          attention_errors(Q.data.data() + (l * Hq + qh) * T * D, k, kh.data(), v, D, positions, D, err[ci][l]);
      }
    }
  }

  auto table = [&](const char* title, double (Errors::*metric)() const) {
    std::printf("\n%s\n\n| codec | bits/value |", title);
    for (std::size_t l = 0; l < L; ++l) std::printf(" L%zu |", l);
    std::printf(" mean |\n|---|---|");
    for (std::size_t l = 0; l <= L; ++l) std::printf("---|");
    std::printf("\n");
    for (std::size_t ci = 0; ci < kCodecs.size(); ++ci) {
      std::printf("| %s | %.3f |", kCodecs[ci].c_str(), bpv[ci]);
      double sum = 0;
      for (std::size_t l = 0; l < L; ++l) {
        const double m = (err[ci][l].*metric)();
        sum += m;
        std::printf(" %.4f |", m);
      }
      std::printf(" **%.4f** |\n", sum / static_cast<double>(L));
    }
  };
  std::printf("Real dumps %s: %zu layers, %zu query / %zu KV heads, T = %zu, head_dim %zu; "
              "%zu query positions per head.\n",
              dir.c_str(), L, Hq, Hk, T, D, nq);
  table("K relative error ||K - K^|| / ||K|| (per layer)", &Errors::k_rel);
  table("Attention-score RMS error, logits q.k/sqrt(d) (per layer)", &Errors::s_rms);
  table("Attention-output relative error ||o - o^|| / ||o||, V exact (per layer)", &Errors::o_rel);

  // Synthetic K as in models with K biases: per-channel offsets, and a few
  // outlier channels with large bias and spread.
  {
    const std::size_t Ts = 4096, Ds = D, Hs = 4;
    kvq::Rng rng(2024);
    std::vector<float> bias(Ds), sigma(Ds), k(Ts * Ds), v(Ts * Ds), q(Hs * Ts * Ds);
    for (std::size_t c = 0; c < Ds; ++c) {
      bias[c] = static_cast<float>(2 * rng.normal());
      sigma[c] = static_cast<float>(0.5 + rng.uniform());
      if (c % 16 == 5) {
        bias[c] = (c % 32 == 5 ? 30.0f : -25.0f);
        sigma[c] = 3.0f;
      }
    }
    for (std::size_t t = 0; t < Ts; ++t)
      for (std::size_t c = 0; c < Ds; ++c) {
        k[t * Ds + c] = static_cast<float>(bias[c] + sigma[c] * rng.normal());
        v[t * Ds + c] = static_cast<float>(rng.normal());
      }
    for (auto& x : q) x = static_cast<float>(2 * rng.normal());
    std::printf("\nSynthetic K: T = %zu, head_dim %zu, per-channel bias N(0, 2^2), spread 0.5..1.5, "
                "outlier channels c %% 16 == 5 with bias +30/-25 and spread 3; q ~ N(0, 2^2), V ~ N(0, 1), "
                "%zu query heads.\n\n| codec | bits/value | K rel. error | score RMS error | output rel. error |\n"
                "|---|---|---|---|---|\n",
                Ts, Ds, Hs);
    for (std::size_t ci = 0; ci < kCodecs.size(); ++ci) {
      const kvq::AnyCodec codec = kvq::make_codec(kCodecs[ci], Ds);
      const std::vector<float> kh = roundtrip(codec, k.data(), Ts, Ds);
      Errors e;
      for (std::size_t i = 0; i < Ts * Ds; ++i) {
        e.k_num += double(k[i] - kh[i]) * (k[i] - kh[i]);
        e.k_den += double(k[i]) * k[i];
      }
      for (std::size_t h = 0; h < Hs; ++h)
        attention_errors(q.data() + h * Ts * Ds, k.data(), kh.data(), v.data(), Ds, positions, Ds, e);
      std::printf("| %s | %.3f | %.4f | %.4f | %.4f |\n", kCodecs[ci].c_str(), codec.bits_per_value(), e.k_rel(),
                  e.s_rms(), e.o_rel());
    }
  }
  return 0;
}

const kvq::cli::Command reg{"pcquality",
                            "[--data DIR] [--queries N]: per-channel K vs per-token codecs on real K/V dumps "
                            "and a synthetic biased K (markdown tables)",
                            run};
}  // namespace

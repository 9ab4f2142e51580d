// kvq demo: what each codec costs and what it does to attention.
//
// Builds keys and values with the statistics of real K activations (per-channel
// offsets, a few outlier channels), compresses them with every codec, and runs
// one decode step of attention on the compressed rows through the codec's
// working-space interface (prepare_query -> scores -> softmax -> accumulate ->
// finish_output). Prints bits/value, memory for 4096 tokens and the attention
// output's relative error against exact float attention.
#include <kvq/kvq.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main() {
  const std::size_t head_dim = 128, tokens = 4096;
  kvq::Rng rng(2026);
  std::vector<float> offset(head_dim), scale(head_dim);
  for (std::size_t c = 0; c < head_dim; ++c) {
    offset[c] = static_cast<float>(rng.normal() * 0.5);
    scale[c] = c % 37 == 3 ? 6.0f : 1.0f;  // outlier channels, as in models with K biases
  }
  std::vector<float> k(tokens * head_dim), v(tokens * head_dim), q(head_dim);
  for (std::size_t t = 0; t < tokens; ++t)
    for (std::size_t c = 0; c < head_dim; ++c) {
      k[t * head_dim + c] = static_cast<float>(offset[c] + scale[c] * rng.normal());
      v[t * head_dim + c] = static_cast<float>(rng.normal());
    }
  for (auto& x : q) x = static_cast<float>(rng.normal());
  const float inv_sqrt_d = 1.0f / std::sqrt(static_cast<float>(head_dim));

  // Exact attention in double: the reference every codec is judged against.
  std::vector<double> p(tokens), exact(head_dim, 0.0);
  double mx = -1e300, sum = 0;
  for (std::size_t t = 0; t < tokens; ++t) {
    double s = 0;
    for (std::size_t c = 0; c < head_dim; ++c) s += double(q[c]) * k[t * head_dim + c];
    p[t] = s * inv_sqrt_d;
    mx = std::max(mx, p[t]);
  }
  for (auto& x : p) sum += (x = std::exp(x - mx));
  for (std::size_t t = 0; t < tokens; ++t)
    for (std::size_t c = 0; c < head_dim; ++c) exact[c] += p[t] / sum * v[t * head_dim + c];
  double exact_norm = 0;
  for (double x : exact) exact_norm += x * x;

  std::printf("kvq %s demo: one decode step over %zu tokens, head_dim %zu\n", KVQ_VERSION_STRING, tokens, head_dim);
  std::printf("%-8s %12s %16s %22s\n", "codec", "bits/value", "KiB (K+V)", "attention rel. error");
  for (const auto& info : kvq::codec_table()) {
    const kvq::AnyCodec codec = info.make(head_dim);
    const std::size_t tile = codec.tokens_per_tile();
    std::vector<std::byte> kc(tokens / tile * codec.bytes_per_tile()), vc(kc.size());
    for (std::size_t i = 0; i < tokens / tile; ++i) {
      codec.encode_tile(&k[i * tile * head_dim], &kc[i * codec.bytes_per_tile()]);
      codec.encode_tile(&v[i * tile * head_dim], &vc[i * codec.bytes_per_tile()]);
    }
    std::vector<float> qw(head_dim), s(tokens), acc(head_dim, 0.0f), out(head_dim);
    codec.prepare_query(q.data(), qw.data());
    for (std::size_t i = 0; i < tokens / tile; ++i) codec.scores(qw.data(), &kc[i * codec.bytes_per_tile()], &s[i * tile]);
    float smax = -INFINITY, ssum = 0;
    for (auto& x : s) smax = std::max(smax, x *= inv_sqrt_d);
    for (auto& x : s) ssum += (x = std::exp(x - smax));
    for (auto& x : s) x /= ssum;
    for (std::size_t i = 0; i < tokens / tile; ++i) codec.accumulate(acc.data(), &s[i * tile], &vc[i * codec.bytes_per_tile()]);
    codec.finish_output(acc.data(), out.data());
    double err = 0;
    for (std::size_t c = 0; c < head_dim; ++c) err += (out[c] - exact[c]) * (out[c] - exact[c]);
    std::printf("%-8s %12.3f %16.1f %22.5f\n", std::string(codec.name()).c_str(), codec.bits_per_value(),
                2.0 * kc.size() / 1024.0, std::sqrt(err / exact_norm));
  }
  std::printf("(fp32 K+V would take %.1f KiB)\n", 2.0 * tokens * head_dim * 4 / 1024.0);
  return 0;
}

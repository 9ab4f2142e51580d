// How an existing engine adopts kvq, in one file.
//
// The "engine" here is the part of a transformer runtime that owns attention:
// per layer it produces post-RoPE K/V rows [tokens][kv_heads][head_dim] and a
// query [q_heads][head_dim] per position, and wants the attention output back.
// Adopting kvq replaces its K/V tensors and its attention loop with a
// kvq::Cache; everything else in the engine stays as it is.
//
//   kvq_engine_integration ["SPEC"]      e.g. "k=turbo4,v=q4_1,window=128,sinks=4"
//
// It prefills a prompt, decodes, rolls back a rejected speculative draft, and
// reports memory; every attention output is checked against the engine's own
// float attention, and the program fails if the error exceeds what the chosen
// codecs allow (see docs/CACHE.md for measured bounds).
#include <kvq/kvq.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

// --- the engine's side: its model shape and its own exact attention --------
constexpr std::size_t kLayers = 4, kQHeads = 8, kKvHeads = 2, kHeadDim = 128, kMaxContext = 8192;

struct EngineLayer {
  std::vector<float> k, v;  // [t][kv_heads][head_dim], what the engine kept before kvq
};

void engine_attention(const EngineLayer& L, std::size_t n, const float* q, float* out) {
  const std::size_t g = kQHeads / kKvHeads, kv = kKvHeads * kHeadDim;
  std::vector<double> p(n);
  for (std::size_t h = 0; h < kQHeads; ++h) {
    double mx = -1e300, sum = 0;
    for (std::size_t t = 0; t < n; ++t) {
      double s = 0;
      for (std::size_t c = 0; c < kHeadDim; ++c) s += double(q[h * kHeadDim + c]) * L.k[t * kv + h / g * kHeadDim + c];
      mx = std::max(mx, p[t] = s / std::sqrt(double(kHeadDim)));
    }
    for (auto& x : p) sum += (x = std::exp(x - mx));
    for (std::size_t c = 0; c < kHeadDim; ++c) {
      double o = 0;
      for (std::size_t t = 0; t < n; ++t) o += p[t] / sum * L.v[t * kv + h / g * kHeadDim + c];
      out[h * kHeadDim + c] = static_cast<float>(o);
    }
  }
}

// Stand-ins for the model's projections: keys with per-channel offsets, as real K has.
void make_token(kvq::Rng& rng, float* k, float* v, float* q) {
  for (std::size_t i = 0; i < kKvHeads * kHeadDim; ++i) {
    k[i] = static_cast<float>(0.3 * ((i % kHeadDim) % 7) + rng.normal());
    v[i] = static_cast<float>(rng.normal());
  }
  for (std::size_t i = 0; i < kQHeads * kHeadDim; ++i) q[i] = static_cast<float>(rng.normal());
}

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    e += double(a[i] - b[i]) * (a[i] - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(e / n);
}

}  // namespace

int main(int argc, char** argv) try {
  // 1. The configuration comes from the engine's command line.
  const std::string spec_text = argc > 1 ? argv[1] : "k=turbo4,v=q4_1,window=128,sinks=4,rollback=8";
  const kvq::ModelShape shape = kvq::ModelShape::dense(kLayers, kQHeads, kKvHeads, kHeadDim, kMaxContext);
  kvq::Cache cache(shape, kvq::CacheSpec::parse(spec_text));

  kvq::Rng rng(7);
  std::vector<EngineLayer> engine(kLayers);
  const std::size_t kv = kKvHeads * kHeadDim, qn = kQHeads * kHeadDim;
  std::vector<float> k(kv), v(kv), q(qn), out(qn), expect(qn);
  double worst = 0;

  // 2. Prefill: hand the prompt's K/V to the cache in one batch per layer.
  const std::size_t prompt = 1000;
  for (std::size_t l = 0; l < kLayers; ++l) {
    std::vector<float> kb(prompt * kv), vb(prompt * kv), qb(prompt * qn);
    for (std::size_t t = 0; t < prompt; ++t) make_token(rng, &kb[t * kv], &vb[t * kv], &qb[t * qn]);
    cache.append(l, prompt, kb.data(), vb.data());
    engine[l].k = kb;
    engine[l].v = vb;
  }

  // 3. Decode: per step and layer, append the new K/V, attend with the new query.
  auto step = [&](std::size_t l) {
    make_token(rng, k.data(), v.data(), q.data());
    cache.append(l, k.data(), v.data());
    cache.attend(l, q.data(), out.data());
    engine[l].k.insert(engine[l].k.end(), k.begin(), k.end());
    engine[l].v.insert(engine[l].v.end(), v.begin(), v.end());
    engine_attention(engine[l], cache.length(l), q.data(), expect.data());
    worst = std::max(worst, rel_error(out, expect));
  };
  for (int s = 0; s < 64; ++s)
    for (std::size_t l = 0; l < kLayers; ++l) step(l);

  // 4. Speculative decoding: 4 draft tokens, then all rejected -> roll back.
  const std::size_t before = cache.length(0);
  for (int s = 0; s < 4; ++s)
    for (std::size_t l = 0; l < kLayers; ++l) step(l);
  cache.truncate(before);
  for (auto& L : engine) {
    L.k.resize(before * kv);
    L.v.resize(before * kv);
  }
  for (std::size_t l = 0; l < kLayers; ++l) step(l);  // decoding continues from the accepted prefix

  // 5. Memory, now and projected to long contexts for this shape.
  const kvq::MemoryReport m = cache.memory();
  std::printf("spec: %s\n", cache.spec().to_string().c_str());
  std::printf("tokens per layer: %zu   cache: %.1f KiB (fp16 would be %.1f KiB)   %.3f bits/value\n",
              cache.length(0), m.total.total_bytes() / 1024.0, m.total.fp16_bytes() / 1024.0,
              m.total.bits_per_value());
  for (std::size_t ctx : {32768ul, 131072ul}) {
    if (ctx > shape.max_context) continue;
    const auto plan = kvq::plan_memory(shape, cache.spec(), ctx);
    std::printf("projected at %zu tokens: %.1f MiB\n", ctx, plan.total.total_bytes() / 1048576.0);
  }
  const auto plan8k = kvq::plan_memory(shape, cache.spec(), shape.max_context);
  std::printf("projected at %zu tokens: %.1f MiB (%.3f bits/value)\n", shape.max_context,
              plan8k.total.total_bytes() / 1048576.0, plan8k.total.bits_per_value());
  std::printf("worst attention-output relative error vs the engine's exact attention: %.4f\n", worst);

  // A 4-bit K with an exact window keeps outputs well within 0.25 here;
  // anything worse means the integration is wrong, not the codec.
  const double limit = argc > 2 ? std::stod(argv[2]) : 0.25;
  if (!(worst <= limit)) {
    std::fprintf(stderr, "attention error %.4f exceeds %.4f\n", worst, limit);
    return 1;
  }
  return 0;
} catch (const kvq::Error& e) {
  std::fprintf(stderr, "kvq: %s\n", e.what());
  return 1;
}

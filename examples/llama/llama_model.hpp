// A CPU llama forward pass (Eigen) whose attention goes through a pluggable K/V backend.
//
// kvq measures what K/V cache compression costs in model quality by running a real GGUF
// llama model and computing perplexity with each cache configuration. This header holds the
// model: token embedding, per layer RMSNorm -> Q/K/V projections -> RoPE (GGML "normal"
// interleaved pairs or "neox" half split) -> causal GQA attention -> output projection ->
// residual -> RMSNorm -> SwiGLU FFN -> residual, then the final RMSNorm and output head.
// Attention is delegated to an AttentionBackend, so a compressed cache replaces ExactAttention
// without touching the model. Tokens are processed in chunks (matrix-matrix products over the
// chunk); each chunk's K/V are appended before it attends, which gives the same result as
// token-by-token decoding.
#pragma once

#include "gguf.hpp"

#include <kvq/core/error.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kvq::llama {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// GGML rope modes. normal: pairs (x[2i], x[2i+1]); neox: pairs (x[i], x[i + n_rot/2]).
// Pair i rotates by pos * base^(-2i/n_rot); dimensions past n_rot are left unrotated.
enum class RopeMode { normal, neox };

// Geometry every attention backend needs.
struct AttentionShape {
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // query head h uses KV head h / (n_heads / n_kv_heads)
  int head_dim = 0;
};

// Attention over the K/V cache of one sequence. Scores are q.k / sqrt(head_dim), causal.
struct AttentionBackend {
  virtual ~AttentionBackend() = default;
  // Forget every token of every layer (start of a new sequence).
  virtual void reset() = 0;
  // Append n tokens' post-RoPE K and V for this layer: k, v are [n][n_kv_heads][head_dim].
  virtual void append(int layer, int n, const float* k, const float* v) = 0;
  // n query positions ending at the newest appended token: query i sees tokens
  // [0, first_pos + i]. q and out are [n][n_heads][head_dim].
  virtual void attend(int layer, int n, int first_pos, const float* q, float* out) = 0;
};

// Full-precision float32 cache and exact softmax attention; the reference backend.
class ExactAttention final : public AttentionBackend {
 public:
  explicit ExactAttention(const AttentionShape& shape, int reserve_tokens = 0) : s_(shape) {
    kvq::detail::require(shape.n_layers > 0 && shape.n_heads > 0 && shape.n_kv_heads > 0 &&
                             shape.head_dim > 0 && shape.n_heads % shape.n_kv_heads == 0,
                         Errc::invalid_argument, "ExactAttention: invalid attention shape");
    k_.resize(static_cast<std::size_t>(s_.n_layers * s_.n_kv_heads));
    v_.resize(k_.size());
    size_.assign(static_cast<std::size_t>(s_.n_layers), 0);
    if (reserve_tokens > 0)
      for (std::size_t i = 0; i < k_.size(); ++i) {
        k_[i].reserve(static_cast<std::size_t>(reserve_tokens) * s_.head_dim);
        v_[i].reserve(static_cast<std::size_t>(reserve_tokens) * s_.head_dim);
      }
  }

  const AttentionShape& shape() const noexcept { return s_; }
  int size(int layer) const { return size_.at(static_cast<std::size_t>(layer)); }

  void reset() override {
    for (auto& x : k_) x.clear();
    for (auto& x : v_) x.clear();
    std::fill(size_.begin(), size_.end(), 0);
  }

  void append(int layer, int n, const float* k, const float* v) override {
    check_layer(layer);
    kvq::detail::require(n >= 0, Errc::invalid_argument, "ExactAttention::append: negative n");
    const int hd = s_.head_dim;
    for (int g = 0; g < s_.n_kv_heads; ++g) {
      auto& ks = k_[idx(layer, g)];
      auto& vs = v_[idx(layer, g)];
      for (int t = 0; t < n; ++t) {
        const std::size_t off = (static_cast<std::size_t>(t) * s_.n_kv_heads + g) * hd;
        ks.insert(ks.end(), k + off, k + off + hd);
        vs.insert(vs.end(), v + off, v + off + hd);
      }
    }
    size_[static_cast<std::size_t>(layer)] += n;
  }

  void attend(int layer, int n, int first_pos, const float* q, float* out) override {
    check_layer(layer);
    const int end = first_pos + n;
    kvq::detail::require(n > 0 && first_pos >= 0 && end <= size(layer), Errc::out_of_range,
                         "ExactAttention::attend: queries past the appended tokens");
    const int hd = s_.head_dim, group = s_.n_heads / s_.n_kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    qg_.resize(group * n, hd);
    for (int g = 0; g < s_.n_kv_heads; ++g) {
      // Rows j*n + i hold query i of head g*group + j: the whole GQA group in one product.
      for (int j = 0; j < group; ++j)
        for (int i = 0; i < n; ++i)
          qg_.row(j * n + i) = Eigen::Map<const Eigen::RowVectorXf>(
              q + (static_cast<std::size_t>(i) * s_.n_heads + g * group + j) * hd, hd);
      Eigen::Map<const RowMatrix> K(k_[idx(layer, g)].data(), end, hd);
      Eigen::Map<const RowMatrix> V(v_[idx(layer, g)].data(), end, hd);
      // Softmax over key blocks with a running max and sum (exact up to rounding); the
      // blocks keep the score matrix in cache at long contexts.
      const int rows = group * n;
      og_.setZero(rows, hd);
      row_max_.setConstant(rows, -std::numeric_limits<float>::infinity());
      row_sum_.setZero(rows);
      for (int kb = 0; kb < end; kb += kKeyBlock) {
        const int bl = std::min(kKeyBlock, end - kb);
        scores_.resize(rows, bl);
        scores_.noalias() = (qg_ * K.middleRows(kb, bl).transpose()) * scale;
        for (int r = 0; r < rows; ++r) {
          const int vis = std::clamp(first_pos + (r % n) + 1 - kb, 0, bl);  // visible keys here
          auto seen = scores_.row(r).head(vis).array();
          if (vis > 0) {
            const float mx = std::max(row_max_[r], seen.maxCoeff());
            const float corr = std::exp(row_max_[r] - mx);  // 0 on the first block
            seen = (seen - mx).exp();  // Eigen's vectorized exp (about 1 ulp)
            row_sum_[r] = row_sum_[r] * corr + seen.sum();
            if (corr != 1.0f) og_.row(r) *= corr;
            row_max_[r] = mx;
          }
          scores_.row(r).tail(bl - vis).setZero();
        }
        og_.noalias() += scores_ * V.middleRows(kb, bl);
      }
      for (int r = 0; r < rows; ++r) og_.row(r) /= row_sum_[r];
      for (int j = 0; j < group; ++j)
        for (int i = 0; i < n; ++i)
          Eigen::Map<Eigen::RowVectorXf>(out + (static_cast<std::size_t>(i) * s_.n_heads + g * group + j) * hd, hd) =
              og_.row(j * n + i);
    }
  }

 private:
  std::size_t idx(int layer, int g) const { return static_cast<std::size_t>(layer * s_.n_kv_heads + g); }
  void check_layer(int layer) const {
    kvq::detail::require(layer >= 0 && layer < s_.n_layers, Errc::out_of_range,
                         "ExactAttention: layer " + std::to_string(layer) + " out of range");
  }

  AttentionShape s_;
  std::vector<std::vector<float>> k_, v_;  // [layer * n_kv + g] -> [T][head_dim]
  std::vector<int> size_;
  static constexpr int kKeyBlock = 256;
  RowMatrix qg_, scores_, og_;
  Eigen::VectorXf row_max_, row_sum_;
};

// Forwards to another backend and copies Q, K and V of chosen layers for the first
// `max_tokens` positions, as [layer][head][t][head_dim] (the layout of the K/V dumps).
class RecordingAttention final : public AttentionBackend {
 public:
  RecordingAttention(AttentionBackend& inner, const AttentionShape& shape, int max_tokens)
      : inner_(inner), s_(shape), max_t_(max_tokens) {
    const auto L = static_cast<std::size_t>(s_.n_layers), T = static_cast<std::size_t>(max_t_),
               D = static_cast<std::size_t>(s_.head_dim);
    q.assign(L * s_.n_heads * T * D, 0.0f);
    k.assign(L * s_.n_kv_heads * T * D, 0.0f);
    v.assign(k.size(), 0.0f);
    count_.assign(L, 0);
  }
  std::vector<float> q, k, v;

  float q_at(int l, int h, int t, int d) const { return q[at(l, h, s_.n_heads, t, d)]; }
  float k_at(int l, int h, int t, int d) const { return k[at(l, h, s_.n_kv_heads, t, d)]; }
  float v_at(int l, int h, int t, int d) const { return v[at(l, h, s_.n_kv_heads, t, d)]; }

  void reset() override {
    inner_.reset();
    std::fill(count_.begin(), count_.end(), 0);
  }
  void append(int layer, int n, const float* kk, const float* vv) override {
    const int base = count_.at(static_cast<std::size_t>(layer));
    for (int i = 0; i < n && base + i < max_t_; ++i)
      for (int h = 0; h < s_.n_kv_heads; ++h)
        for (int d = 0; d < s_.head_dim; ++d) {
          const std::size_t src = (static_cast<std::size_t>(i) * s_.n_kv_heads + h) * s_.head_dim + d;
          k[at(layer, h, s_.n_kv_heads, base + i, d)] = kk[src];
          v[at(layer, h, s_.n_kv_heads, base + i, d)] = vv[src];
        }
    count_[static_cast<std::size_t>(layer)] += n;
    inner_.append(layer, n, kk, vv);
  }
  void attend(int layer, int n, int first_pos, const float* qq, float* out) override {
    for (int i = 0; i < n && first_pos + i < max_t_; ++i)
      for (int h = 0; h < s_.n_heads; ++h)
        for (int d = 0; d < s_.head_dim; ++d)
          q[at(layer, h, s_.n_heads, first_pos + i, d)] =
              qq[(static_cast<std::size_t>(i) * s_.n_heads + h) * s_.head_dim + d];
    inner_.attend(layer, n, first_pos, qq, out);
  }

 private:
  std::size_t at(int l, int h, int heads, int t, int d) const {
    return ((static_cast<std::size_t>(l) * heads + h) * max_t_ + t) * s_.head_dim + d;
  }
  AttentionBackend& inner_;
  AttentionShape s_;
  int max_t_;
  std::vector<int> count_;
};

struct Config {
  int n_vocab = 0;
  int dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_dim = 0;
  int n_ctx = 0;
  int rope_dims = 0;
  double rope_base = 10000.0;
  float rms_eps = 1e-5f;
  RopeMode rope_mode = RopeMode::normal;

  AttentionShape attention_shape() const { return {n_layers, n_heads, n_kv_heads, head_dim}; }
};

// cos/sin of pos * base^(-2i/n_rot) for positions [pos0, pos0 + n), computed in double.
struct RopeTable {
  int pos0 = 0, n = 0, half = 0;
  std::vector<float> cos, sin;  // [n][half]

  RopeTable() = default;
  RopeTable(int n_rot, double base, int first_pos, int count)
      : pos0(first_pos), n(count), half(n_rot / 2) {
    cos.resize(static_cast<std::size_t>(n) * half);
    sin.resize(cos.size());
    for (int p = 0; p < n; ++p)
      for (int i = 0; i < half; ++i) {
        const double freq = std::pow(base, -2.0 * i / n_rot);
        const double a = static_cast<double>(pos0 + p) * freq;
        cos[static_cast<std::size_t>(p) * half + i] = static_cast<float>(std::cos(a));
        sin[static_cast<std::size_t>(p) * half + i] = static_cast<float>(std::sin(a));
      }
  }
};

// Rotates n_vec vectors of head_dim floats at x (all at table position p) in place.
inline void apply_rope(float* x, int n_vec, int head_dim, const RopeTable& tab, int p, RopeMode mode) {
  const float* c = tab.cos.data() + static_cast<std::size_t>(p) * tab.half;
  const float* s = tab.sin.data() + static_cast<std::size_t>(p) * tab.half;
  for (int h = 0; h < n_vec; ++h) {
    float* v = x + static_cast<std::size_t>(h) * head_dim;
    for (int i = 0; i < tab.half; ++i) {
      const int a = mode == RopeMode::normal ? 2 * i : i;
      const int b = mode == RopeMode::normal ? 2 * i + 1 : i + tab.half;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c[i] - x1 * s[i];
      v[b] = x0 * s[i] + x1 * c[i];
    }
  }
}

class LlamaModel {
 public:
  // Loads a llama-architecture GGUF (F32/F16/BF16/Q8_0 weights, converted to float32).
  static LlamaModel load(const std::filesystem::path& path, RopeMode mode = RopeMode::normal) {
    auto f = tools::GgufFile::open(path);
    LlamaModel m;
    auto& c = m.cfg_;
    if (f.has("general.architecture") && f.get_string("general.architecture") != "llama")
      kvq::detail::fail(Errc::unsupported, path.string() + ": architecture '" +
                                               f.get_string("general.architecture") + "' is not llama");
    auto as_int = [&](const std::string& key, std::uint64_t fallback, bool required) {
      const std::uint64_t v = required ? f.get_uint(key) : f.get_uint_or(key, fallback);
      if (v == 0 || v > (1u << 24)) kvq::detail::fail(Errc::corrupt_data, path.string() + ": bad " + key);
      return static_cast<int>(v);
    };
    c.dim = as_int("llama.embedding_length", 0, true);
    c.n_layers = as_int("llama.block_count", 0, true);
    c.ffn_dim = as_int("llama.feed_forward_length", 0, true);
    c.n_heads = as_int("llama.attention.head_count", 0, true);
    c.n_kv_heads = as_int("llama.attention.head_count_kv", static_cast<std::uint64_t>(c.n_heads), false);
    c.n_ctx = as_int("llama.context_length", 4096, false);
    kvq::detail::require(c.dim % c.n_heads == 0 && c.n_heads % c.n_kv_heads == 0, Errc::corrupt_data,
                         path.string() + ": head counts do not divide the model dimensions");
    c.head_dim = c.dim / c.n_heads;
    c.rope_dims = as_int("llama.rope.dimension_count", static_cast<std::uint64_t>(c.head_dim), false);
    kvq::detail::require(c.rope_dims % 2 == 0 && c.rope_dims <= c.head_dim, Errc::corrupt_data,
                         path.string() + ": llama.rope.dimension_count must be even and <= head_dim");
    c.rope_base = f.get_float_or("llama.rope.freq_base", 10000.0);
    c.rms_eps = static_cast<float>(f.get_float_or("llama.attention.layer_norm_rms_epsilon", 1e-5));
    c.rope_mode = mode;
    const auto& emb = f.tensor("token_embd.weight");
    kvq::detail::require(emb.ne.size() == 2 && emb.ne[0] == static_cast<std::uint64_t>(c.dim) &&
                             emb.ne[1] <= (1u << 24),
                         Errc::corrupt_data, path.string() + ": token_embd.weight has a wrong shape");
    c.n_vocab = static_cast<int>(emb.ne[1]);

    const int nq = c.n_heads * c.head_dim, nkv = c.n_kv_heads * c.head_dim;
    m.tok_embd_ = matrix(f, "token_embd.weight", c.n_vocab, c.dim);
    m.out_norm_ = vector(f, "output_norm.weight", c.dim);
    m.output_ = f.find_tensor("output.weight") ? matrix(f, "output.weight", c.n_vocab, c.dim) : m.tok_embd_;
    m.layers_.resize(static_cast<std::size_t>(c.n_layers));
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      auto& L = m.layers_[static_cast<std::size_t>(l)];
      L.attn_norm = vector(f, p + "attn_norm.weight", c.dim);
      L.wq = matrix(f, p + "attn_q.weight", nq, c.dim);
      L.wk = matrix(f, p + "attn_k.weight", nkv, c.dim);
      L.wv = matrix(f, p + "attn_v.weight", nkv, c.dim);
      L.wo = matrix(f, p + "attn_output.weight", c.dim, nq);
      L.ffn_norm = vector(f, p + "ffn_norm.weight", c.dim);
      L.w_gate = matrix(f, p + "ffn_gate.weight", c.ffn_dim, c.dim);
      L.w_up = matrix(f, p + "ffn_up.weight", c.ffn_dim, c.dim);
      L.w_down = matrix(f, p + "ffn_down.weight", c.dim, c.ffn_dim);
    }
    return m;
  }

  const Config& config() const noexcept { return cfg_; }
  void set_rope_mode(RopeMode mode) noexcept { cfg_.rope_mode = mode; }

  // Runs tokens at positions [pos0, pos0 + n) given a backend that already holds positions
  // [0, pos0) of every layer. Writes logits [n][n_vocab] when `logits` is non-null.
  void forward(std::span<const int> tokens, int pos0, AttentionBackend& backend, RowMatrix* logits) const {
    const auto& c = cfg_;
    const int n = static_cast<int>(tokens.size());
    kvq::detail::require(n > 0 && pos0 >= 0, Errc::invalid_argument, "LlamaModel::forward: empty chunk");
    RowMatrix x(n, c.dim);
    for (int i = 0; i < n; ++i) {
      const int id = tokens[static_cast<std::size_t>(i)];
      kvq::detail::require(id >= 0 && id < c.n_vocab, Errc::out_of_range,
                           "LlamaModel::forward: token id " + std::to_string(id) + " outside the vocabulary");
      x.row(i) = tok_embd_.row(id);
    }
    const RopeTable rope(c.rope_dims, c.rope_base, pos0, n);
    RowMatrix xn(n, c.dim), q, k, v, att(n, c.n_heads * c.head_dim), g, u;
    for (int l = 0; l < c.n_layers; ++l) {
      const auto& L = layers_[static_cast<std::size_t>(l)];
      rms_norm(x, L.attn_norm, xn);
      q.noalias() = xn * L.wq.transpose();
      k.noalias() = xn * L.wk.transpose();
      v.noalias() = xn * L.wv.transpose();
      for (int i = 0; i < n; ++i) {
        apply_rope(q.row(i).data(), c.n_heads, c.head_dim, rope, i, c.rope_mode);
        apply_rope(k.row(i).data(), c.n_kv_heads, c.head_dim, rope, i, c.rope_mode);
      }
      backend.append(l, n, k.data(), v.data());
      backend.attend(l, n, pos0, q.data(), att.data());
      x.noalias() += att * L.wo.transpose();
      rms_norm(x, L.ffn_norm, xn);
      g.noalias() = xn * L.w_gate.transpose();
      u.noalias() = xn * L.w_up.transpose();
      g.array() = g.array() / (1.0f + (-g.array()).exp()) * u.array();  // SiLU(gate) * up
      x.noalias() += g * L.w_down.transpose();
    }
    if (logits) {
      rms_norm(x, out_norm_, xn);
      logits->noalias() = xn * output_.transpose();
    }
  }

  // Negative log-likelihood (nats) of targets[i] after inputs[0..i], for one sequence that
  // starts at position 0. The backend is reset first; chunk tokens are processed at a time.
  std::vector<double> nll(std::span<const int> inputs, std::span<const int> targets,
                          AttentionBackend& backend, int chunk = 64) const {
    kvq::detail::require(inputs.size() == targets.size(), Errc::shape_mismatch,
                         "LlamaModel::nll: inputs and targets differ in length");
    kvq::detail::require(chunk > 0, Errc::invalid_argument, "LlamaModel::nll: chunk must be positive");
    backend.reset();
    std::vector<double> out(inputs.size());
    RowMatrix logits;
    for (std::size_t p0 = 0; p0 < inputs.size(); p0 += static_cast<std::size_t>(chunk)) {
      const std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(chunk), inputs.size() - p0);
      forward(inputs.subspan(p0, n), static_cast<int>(p0), backend, &logits);
      for (std::size_t i = 0; i < n; ++i) {
        const int t = targets[p0 + i];
        kvq::detail::require(t >= 0 && t < cfg_.n_vocab, Errc::out_of_range,
                             "LlamaModel::nll: target id outside the vocabulary");
        const float* row = logits.row(static_cast<Eigen::Index>(i)).data();
        double mx = row[0];
        for (int j = 1; j < cfg_.n_vocab; ++j) mx = std::max(mx, static_cast<double>(row[j]));
        double sum = 0.0;
        for (int j = 0; j < cfg_.n_vocab; ++j) sum += std::exp(static_cast<double>(row[j]) - mx);
        out[p0 + i] = mx + std::log(sum) - static_cast<double>(row[t]);
      }
    }
    return out;
  }

 private:
  struct Layer {
    Eigen::RowVectorXf attn_norm, ffn_norm;
    RowMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
  };

  // A GGUF [rows=out, cols=in] matrix: ne = [cols, rows], stored as rows of cols floats.
  static RowMatrix matrix(const tools::GgufFile& f, const std::string& name, int rows, int cols) {
    const auto& t = f.tensor(name);
    kvq::detail::require(t.ne.size() == 2 && t.ne[0] == static_cast<std::uint64_t>(cols) &&
                             t.ne[1] == static_cast<std::uint64_t>(rows),
                         Errc::corrupt_data, "tensor '" + name + "' has shape [" + std::to_string(t.ne[0]) +
                                                 (t.ne.size() > 1 ? ", " + std::to_string(t.ne[1]) : "") +
                                                 "], want [" + std::to_string(cols) + ", " + std::to_string(rows) + "]");
    const auto data = f.tensor_f32(t);
    return Eigen::Map<const RowMatrix>(data.data(), rows, cols);
  }
  static Eigen::RowVectorXf vector(const tools::GgufFile& f, const std::string& name, int n) {
    const auto& t = f.tensor(name);
    kvq::detail::require(t.ne.size() == 1 && t.ne[0] == static_cast<std::uint64_t>(n), Errc::corrupt_data,
                         "tensor '" + name + "' has a wrong shape");
    const auto data = f.tensor_f32(t);
    return Eigen::Map<const Eigen::RowVectorXf>(data.data(), n);
  }

  void rms_norm(const RowMatrix& x, const Eigen::RowVectorXf& w, RowMatrix& out) const {
    out.resize(x.rows(), x.cols());
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const double ms = x.row(i).cast<double>().squaredNorm() / static_cast<double>(x.cols());
      const float s = static_cast<float>(1.0 / std::sqrt(ms + static_cast<double>(cfg_.rms_eps)));
      out.row(i) = (x.row(i) * s).cwiseProduct(w);
    }
  }

  Config cfg_;
  RowMatrix tok_embd_, output_;
  Eigen::RowVectorXf out_norm_;
  std::vector<Layer> layers_;
};

// Byte-level tokenization of the wt2-byte-a model: id = byte + 3, BOS = 1.
inline constexpr int kByteBos = 1;
inline int byte_token(unsigned char b) noexcept { return static_cast<int>(b) + 3; }

}  // namespace kvq::llama

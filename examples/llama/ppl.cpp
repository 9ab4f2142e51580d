// kvq-ppl: perplexity of a GGUF llama model over non-overlapping windows of a text (byte
// tokens, id = byte + 3, BOS = 1) or of a token-id file, with exact float32 attention and,
// with --spec, through a kvq::Cache of that configuration.
//
// This is kvq's quality evaluation: the same windows run through exact attention (the FP32
// baseline) and through a compressed K/V cache (CacheAttention) show what compression costs,
// per token, paired over the same tokens. Each window of `ctx` tokens is fed as
// [BOS] + window[:-1] and every token of the window is predicted once.
// With --dumps DIR the first window's post-RoPE Q/K and V are also compared against the
// q.npy/k.npy/v.npy activation dumps in DIR. With --key-tokens FILE the change is also reported
// on the key tokens alone (LongPPL: tokens the long context predicts better than a short one by
// a margin, see key_tokens.hpp). With --calibrate FILE it measures instead, on the first window,
// every layer's K and V sensitivity per codec (layer_sensitivity.hpp) and writes the table that
// `kvq calibrate --sensitivity FILE` allocates from.
#include "cache_attention.hpp"
#include "key_tokens.hpp"
#include "layer_sensitivity.hpp"
#include "llama_model.hpp"
#include "npy.hpp"

#include <kvq/core/error.hpp>

#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#ifndef KVQ_SHARED_DIR
#define KVQ_SHARED_DIR "../shared"
#endif

namespace {

using kvq::Errc;
using kvq::detail::fail;

const char* kUsage =
    "usage: kvq-ppl [--model PATH] [--text FILE | --tokens FILE] [--ctx 4096] [--windows N]\n"
    "               [--chunk 64] [--offset BYTES] [--bos ID] [--rope normal|neox] [--dumps DIR]\n"
    "               [--spec SPEC] [--k NAME] [--v NAME] [--window N] [--sinks N]\n"
    "               [--prefill decode|batch] [--readout kernel|decoded] [--baseline run|skip]\n"
    "               [--nll-out FILE] [--key-tokens FILE] [--key-margin 0.5] [--key-short 256]\n"
    "               [--key-block 64] [--calibrate FILE [--calibrate-k LIST] [--calibrate-v LIST]]\n"
    "  --model    GGUF llama model (default " KVQ_SHARED_DIR "/models/wt2-byte-a.gguf)\n"
    "  --text     UTF-8 text, byte tokens id = byte + 3 (default " KVQ_SHARED_DIR "/data/wikitext-2/test.txt)\n"
    "  --tokens   whitespace-separated token ids instead of text\n"
    "  --ctx      window length in tokens; windows do not overlap (default 4096)\n"
    "  --windows  evaluate at most N windows (default: all, the last one may be short)\n"
    "  --chunk    tokens per forward step (default 64)\n"
    "  --offset   skip this many leading bytes/tokens of the input (default 0)\n"
    "  --bos      BOS id prepended to each window; -1: none, the window's first token is\n"
    "             context only (default 1)\n"
    "  --rope     RoPE pairing: normal (GGML default, interleaved) or neox (default normal)\n"
    "  --dumps    directory with q.npy/k.npy/v.npy [layers, heads, T, head_dim] to check the\n"
    "             first window's activations against\n"
    "  --spec     evaluate through a kvq::Cache of this configuration, e.g.\n"
    "             \"k=turbo4,v=q4_1,window=128,sinks=4,boundary=2+2:q8_0/q8_0\" (grammar: docs/CACHE.md)\n"
    "  --k, --v, --window, --sinks\n"
    "             shorthands appended to the spec (k=, v=, window=, sinks=); later items win\n"
    "  --prefill  decode: each query sees the cache as token-by-token generation would (default);\n"
    "             batch: a chunk is appended whole, then its queries attend (chunked prefill)\n"
    "  --readout  kernel: attention through Cache::attend (default); decoded: over a float mirror\n"
    "             of the cache's current representation, updated tile by tile (same quality up to\n"
    "             rounding, ~10x faster until the SIMD kernels land)\n"
    "  --baseline run: also run exact attention over the same windows and report the change\n"
    "             (default); skip: cache only\n"
    "  --nll-out  write every predicted token's NLL (nats) to FILE, one line per token:\n"
    "             window, position, exact NLL, cache NLL ('na' where not run)\n"
    "  --key-tokens  also report the change on key tokens (LongPPL): tokens whose exact NLL with\n"
    "             the full window is lower than with only the last --key-short inputs (after BOS)\n"
    "             by more than --key-margin nats. FILE holds both exact NLLs per token for these\n"
    "             windows: read if it exists (its header must match the run), else computed\n"
    "             (exact attention; the short pass costs ~5x a window) and written\n"
    "  --key-margin  nats (default 0.5: 2.75% of the first 12,288 WikiText-2 test bytes for wt2-byte-a)\n"
    "  --key-short   short context in tokens (default 256)\n"
    "  --key-block   targets per short-context pass: their short context is key-short to\n"
    "             key-short + key-block - 1 tokens (default 64)\n"
    "  --calibrate  measure per-layer sensitivity instead: on the first window, the mean NLL increase\n"
    "             when one layer's K (or V) alone uses a codec, every other stream f32 (window and\n"
    "             sinks from --spec/--window/--sinks); writes the table to FILE for\n"
    "             `kvq calibrate --sensitivity FILE`. ~0.6 s of CPU per cell and 1024 tokens\n"
    "  --calibrate-k, --calibrate-v  candidate codecs, comma-separated (default: every codec valid\n"
    "             for that side, and f32)\n";

std::map<std::string, std::string> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (a.rfind("--", 0) != 0 || i + 1 >= argc)
      fail(Errc::invalid_argument, "bad argument '" + a + "' (options take a value; see --help)");
    opt[a.substr(2)] = argv[++i];
  }
  static const char* known[] = {"model", "text",   "tokens", "ctx", "windows", "chunk",   "offset", "bos",
                                "rope",  "dumps",  "spec",   "k",   "v",       "window", "sinks",  "prefill",
                                "baseline", "readout", "nll-out", "key-tokens", "key-margin", "key-short", "key-block",
                                "calibrate", "calibrate-k", "calibrate-v"};
  for (const auto& [k, v] : opt) {
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    if (!ok) fail(Errc::invalid_argument, "unknown option --" + k);
  }
  return opt;
}

long long to_int(const std::map<std::string, std::string>& opt, const std::string& key, long long fallback) {
  auto it = opt.find(key);
  if (it == opt.end()) return fallback;
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != it->second.size())
    fail(Errc::invalid_argument, "--" + key + " expects an integer, got '" + it->second + "'");
  return v;
}

double to_double(const std::map<std::string, std::string>& opt, const std::string& key, double fallback) {
  auto it = opt.find(key);
  if (it == opt.end()) return fallback;
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || !end || *end != '\0' || !std::isfinite(v))
    fail(Errc::invalid_argument, "--" + key + " expects a number, got '" + it->second + "'");
  return v;
}

// The exact full-context and short-context NLL of every token of a run's windows, the reference
// that defines key tokens. One header line naming what was measured (a file made for other
// windows, text, model or short context is refused), then "window position full_nll short_nll".
struct KeyReference {
  std::string header;
  std::vector<std::vector<double>> full, shorter;  // per window

  bool load(const std::string& path) {
    std::ifstream in(path);
    if (!in) return false;
    std::string line;
    if (!std::getline(in, line) || line != header)
      fail(Errc::invalid_argument, "--key-tokens " + path + " was made for another run:\n  file: " + line +
                                       "\n  this: " + header + "\n(delete it or give another file)");
    int w = 0;
    std::size_t pos = 0;
    double f = 0.0, s = 0.0;
    while (in >> w >> pos >> f >> s) {
      if (w < 0 || static_cast<std::size_t>(w) > full.size() || (static_cast<std::size_t>(w) == full.size()) != (pos == 0) ||
          (pos != 0 && pos != full.back().size()))
        fail(Errc::corrupt_data, path + ": token lines out of order at window " + std::to_string(w));
      if (static_cast<std::size_t>(w) == full.size()) full.emplace_back(), shorter.emplace_back();
      full.back().push_back(f);
      shorter.back().push_back(s);
    }
    if (!in.eof()) fail(Errc::corrupt_data, path + ": unreadable token line");
    return true;
  }
  void save(const std::string& path) const {
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) fail(Errc::io_error, "cannot write '" + tmp + "'");
    std::fprintf(f, "%s\n", header.c_str());
    for (std::size_t w = 0; w < full.size(); ++w)
      for (std::size_t i = 0; i < full[w].size(); ++i) std::fprintf(f, "%zu %zu %.6f %.6f\n", w, i, full[w][i], shorter[w][i]);
    if (std::fclose(f) != 0) fail(Errc::io_error, "cannot write '" + tmp + "'");
    std::filesystem::rename(tmp, path);
  }
};

std::vector<int> read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(Errc::io_error, "cannot open '" + path + "'");
  std::vector<int> ids;
  std::string word;
  while (in >> word) {
    std::size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < 0 || v > 0x7FFFFFFF)
      fail(Errc::corrupt_data, path + ": '" + word + "' is not a token id");
    ids.push_back(static_cast<int>(v));
  }
  return ids;
}

// Max |a - b| and max |a - b| / max|b| over one layer of a dump.
void check_dumps(const std::string& dir, const kvq::llama::RecordingAttention& rec,
                 const kvq::llama::Config& c, int T) {
  const char* names[] = {"q", "k", "v"};
  for (const char* name : names) {
    const auto arr = kvq::tools::read_npy(dir + "/" + name + ".npy");
    const int heads = name[0] == 'q' ? c.n_heads : c.n_kv_heads;
    if (arr.ndim() != 4 || arr.shape[0] != static_cast<std::size_t>(c.n_layers) ||
        arr.shape[1] != static_cast<std::size_t>(heads) || arr.shape[3] != static_cast<std::size_t>(c.head_dim))
      fail(Errc::shape_mismatch, dir + "/" + name + ".npy does not match the model's shape");
    const int n = std::min<int>(T, static_cast<int>(arr.shape[2]));
    std::printf("dump check %s.npy over %d tokens:", name, n);
    double worst = 0.0;
    for (int l = 0; l < c.n_layers; ++l) {
      double max_err = 0.0, max_ref = 0.0;
      for (int h = 0; h < heads; ++h)
        for (int t = 0; t < n; ++t)
          for (int d = 0; d < c.head_dim; ++d) {
            const float ref = arr.data[((static_cast<std::size_t>(l) * heads + h) * arr.shape[2] + t) * c.head_dim + d];
            const float got = name[0] == 'q' ? rec.q_at(l, h, t, d) : name[0] == 'k' ? rec.k_at(l, h, t, d)
                                                                                     : rec.v_at(l, h, t, d);
            max_err = std::max(max_err, static_cast<double>(std::fabs(got - ref)));
            max_ref = std::max(max_ref, static_cast<double>(std::fabs(ref)));
          }
      std::printf(" L%d %.2e", l, max_err);
      worst = std::max(worst, max_err / std::max(max_ref, 1e-30));
    }
    std::printf("  (max abs error per layer; worst relative to max|ref| %.2e)\n", worst);
  }
}

std::vector<std::string> codec_list(const std::map<std::string, std::string>& opt, const std::string& key,
                                    std::vector<std::string> fallback) {
  auto it = opt.find(key);
  if (it == opt.end()) return fallback;
  std::vector<std::string> out;
  std::stringstream ss(it->second);
  for (std::string name; std::getline(ss, name, ',');) {
    if (name.empty()) fail(Errc::invalid_argument, "--" + key + ": empty codec name in '" + it->second + "'");
    out.push_back(name);
  }
  if (out.empty()) fail(Errc::invalid_argument, "--" + key + " names no codec");
  return out;
}

// --calibrate: the per-layer sensitivity table on the first window (layer_sensitivity.hpp).
int calibrate(const std::map<std::string, std::string>& opt, const kvq::llama::LlamaModel& model,
              const std::string& model_path, const std::string& input, const std::vector<int>& ids, long long ctx,
              long long bos, long long chunk, const kvq::CacheSpec& base) {
  for (const char* key : {"key-tokens", "nll-out", "dumps", "prefill", "readout", "baseline"})
    if (opt.count(key)) fail(Errc::invalid_argument, std::string("--") + key + " does not apply to --calibrate");
  if (!base.layers.empty() || !base.tiers.empty() || base.boundary.first + base.boundary.last > 0)
    fail(Errc::invalid_argument, "--calibrate takes window and sinks from the spec, not layers, tiers or boundary");
  const auto k = codec_list(opt, "calibrate-k", kvq::tools::default_key_codecs());
  const auto v = codec_list(opt, "calibrate-v", kvq::tools::default_value_codecs());
  const std::size_t len = std::min<std::size_t>(static_cast<std::size_t>(ctx), ids.size());
  std::vector<int> in, tgt;
  if (bos >= 0) {
    in.push_back(static_cast<int>(bos));
    in.insert(in.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(len - 1));
    tgt.assign(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(len));
  } else {
    if (len < 2) fail(Errc::invalid_argument, "--calibrate needs at least 2 tokens");
    in.assign(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(len - 1));
    tgt.assign(ids.begin() + 1, ids.begin() + static_cast<std::ptrdiff_t>(len));
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto table = kvq::llama::measure_nll_sensitivity(
      model, in, tgt, k, v, base, static_cast<int>(chunk), [&](std::size_t done, std::size_t total) {
        std::fprintf(stderr, "\rcalibrate: %zu/%zu cells, %.0f s", done, total,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      });
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "\n");
  table.source = "nll model=" + model_path + " input=" + input + " tokens=" + std::to_string(tgt.size()) +
                 " chunk=" + std::to_string(chunk);
  const std::string path = opt.at("calibrate");
  std::ofstream out(path);
  if (!out) fail(Errc::io_error, "cannot write --calibrate " + path);
  kvq::tools::write_sensitivity(out, table);
  out.close();
  if (!out) fail(Errc::io_error, "cannot write --calibrate " + path);
  std::printf("calibrate: %zu tokens, window %zu, sinks %zu, %zu K x %zu V codecs x %zu layers in %.1f s -> %s\n",
              tgt.size(), base.window, base.sinks, k.size(), v.size(), table.n_layers(), sec, path.c_str());
  for (int side = 0; side < 2; ++side) {
    std::printf("\n%s: mean NLL increase (nats/token) per layer\n%-6s", side == 0 ? "K" : "V", "layer");
    for (const auto& name : table.codecs[side]) std::printf(" %10s", name.c_str());
    std::printf("\n");
    for (std::size_t l = 0; l < table.n_layers(); ++l) {
      std::printf("%-6zu", l);
      for (double d : table.damage[side][l]) std::printf(" %+10.6f", d);
      std::printf("\n");
    }
  }
  return 0;
}

int run(int argc, char** argv) {
  const auto opt = parse_args(argc, argv);
  auto get = [&](const std::string& k, const std::string& d) {
    auto it = opt.find(k);
    return it == opt.end() ? d : it->second;
  };
  const std::string model_path = get("model", std::string(KVQ_SHARED_DIR) + "/models/wt2-byte-a.gguf");
  const bool use_tokens = opt.count("tokens") != 0;
  if (use_tokens && opt.count("text")) fail(Errc::invalid_argument, "give --text or --tokens, not both");
  const std::string input = use_tokens ? get("tokens", "") : get("text", std::string(KVQ_SHARED_DIR) + "/data/wikitext-2/test.txt");
  const long long ctx = to_int(opt, "ctx", 4096), max_windows = to_int(opt, "windows", -1),
                  chunk = to_int(opt, "chunk", 64), offset = to_int(opt, "offset", 0),
                  bos = to_int(opt, "bos", 1);
  const std::string rope = get("rope", "normal");
  if (ctx < 2 || ctx > (1 << 24)) fail(Errc::invalid_argument, "--ctx must be in [2, 2^24]");
  if (chunk < 1) fail(Errc::invalid_argument, "--chunk must be positive");
  if (offset < 0) fail(Errc::invalid_argument, "--offset must be non-negative");
  if (rope != "normal" && rope != "neox") fail(Errc::invalid_argument, "--rope must be normal or neox");

  // The cache configuration: --spec plus the shorthands, later items overriding earlier ones.
  std::string spec_text = get("spec", "");
  for (const char* key : {"k", "v", "window", "sinks"})
    if (opt.count(key)) spec_text += (spec_text.empty() ? "" : ",") + std::string(key) + "=" + opt.at(key);
  const bool use_cache = !spec_text.empty();
  const std::string prefill = get("prefill", "decode"), baseline = get("baseline", "run");
  if (prefill != "decode" && prefill != "batch") fail(Errc::invalid_argument, "--prefill must be decode or batch");
  if (baseline != "run" && baseline != "skip") fail(Errc::invalid_argument, "--baseline must be run or skip");
  const std::string readout = get("readout", "kernel");
  if (readout != "kernel" && readout != "decoded") fail(Errc::invalid_argument, "--readout must be kernel or decoded");
  const bool use_keys = opt.count("key-tokens") != 0;
  const double key_margin = to_double(opt, "key-margin", 0.5);
  const long long key_short = to_int(opt, "key-short", 256), key_block = to_int(opt, "key-block", 64);
  if (key_margin < 0) fail(Errc::invalid_argument, "--key-margin must be non-negative");
  if (key_short < 1 || key_short > (1 << 24) || key_block < 1 || key_block > (1 << 24))
    fail(Errc::invalid_argument, "--key-short and --key-block must be in [1, 2^24]");
  const kvq::llama::ShortContext short_ctx{static_cast<int>(key_short), static_cast<int>(key_block)};
  const kvq::CacheSpec parsed_spec = use_cache ? kvq::CacheSpec::parse(spec_text) : kvq::CacheSpec{};

  std::fprintf(stderr, "loading %s\n", model_path.c_str());
  const auto model = kvq::llama::LlamaModel::load(
      model_path, rope == "neox" ? kvq::llama::RopeMode::neox : kvq::llama::RopeMode::normal);
  const auto& c = model.config();
  std::printf("model %s: dim %d, layers %d, heads %d/%d, head_dim %d, ffn %d, vocab %d, ctx %d, rope %s %d dims base %g\n",
              model_path.c_str(), c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim,
              c.n_vocab, c.n_ctx, rope.c_str(), c.rope_dims, c.rope_base);
  if (ctx > c.n_ctx) std::fprintf(stderr, "warning: --ctx %lld exceeds the model's context %d\n", ctx, c.n_ctx);

  std::vector<int> ids;
  if (use_tokens) {
    ids = read_token_file(input);
  } else {
    const auto bytes = kvq::tools::detail::read_file_bytes(input);
    ids.reserve(bytes.size());
    for (unsigned char b : bytes) ids.push_back(kvq::llama::byte_token(b));
  }
  if (static_cast<std::size_t>(offset) >= ids.size()) fail(Errc::invalid_argument, "--offset is past the end of the input");
  ids.erase(ids.begin(), ids.begin() + offset);
  const char* unit = use_tokens ? "token" : "byte";

  if (opt.count("calibrate")) return calibrate(opt, model, model_path, input, ids, ctx, bos, chunk, parsed_spec);

  // Key tokens: the exact full/short NLL reference, from --key-tokens FILE or measured here.
  KeyReference keyref;
  bool keys_loaded = false;
  if (use_keys) {
    auto canonical = [](const std::string& path) {
      std::error_code ec;
      const auto c = std::filesystem::weakly_canonical(path, ec);
      return ec ? path : c.string();
    };
    keyref.header = "# kvq-ppl key-token reference: model=" + canonical(model_path) + " input=" + canonical(input) +
                    " offset=" + std::to_string(offset) + " ctx=" + std::to_string(ctx) + " windows=" +
                    std::to_string(max_windows) + " bos=" + std::to_string(bos) + " rope=" + rope +
                    " short=" + std::to_string(key_short) + " block=" + std::to_string(key_block);
    keys_loaded = keyref.load(opt.at("key-tokens"));
    if (!keys_loaded && use_cache && baseline == "skip")
      std::fprintf(stderr, "note: %s not found: running exact attention too, to measure the key tokens\n",
                   opt.at("key-tokens").c_str());
  }
  const bool run_exact = !use_cache || baseline == "run" || (use_keys && !keys_loaded);
  double key_sec = 0.0, key_base = 0.0, key_short_sum = 0.0, key_cache = 0.0, key_d = 0.0, key_d2 = 0.0;
  std::size_t key_n = 0;

  std::unique_ptr<kvq::llama::CacheAttention> cached;
  if (use_cache) {
    const auto& spec = parsed_spec;
    cached = std::make_unique<kvq::llama::CacheAttention>(
        c.attention_shape(), static_cast<int>(ctx), spec,
        prefill == "batch" ? kvq::llama::Prefill::batch : kvq::llama::Prefill::decode,
        readout == "decoded" ? kvq::llama::Readout::decoded : kvq::llama::Readout::kernel);
    std::printf("cache: %s, prefill %s, readout %s, chunk %lld\n", spec.to_string().c_str(), prefill.c_str(),
                readout.c_str(), chunk);
  }

  std::FILE* nll_out = nullptr;
  if (opt.count("nll-out")) {
    nll_out = std::fopen(opt.at("nll-out").c_str(), "w");
    if (!nll_out) fail(Errc::io_error, "cannot write '" + opt.at("nll-out") + "'");
    std::fprintf(nll_out, "window position exact_nll cache_nll\n");
  }
  struct Closer {
    std::FILE* f;
    ~Closer() {
      if (f) std::fclose(f);
    }
  } closer{nll_out};

  kvq::llama::ExactAttention exact(c.attention_shape(), static_cast<int>(ctx));
  std::unique_ptr<kvq::llama::RecordingAttention> rec;
  if (opt.count("dumps")) rec = std::make_unique<kvq::llama::RecordingAttention>(exact, c.attention_shape(), static_cast<int>(ctx));

  // Sums over every token: exact NLL, cache NLL, and the paired difference (for its spread).
  double total_nll = 0.0, total_cache = 0.0, sum_d = 0.0, sum_d2 = 0.0, total_sec = 0.0, total_cpu = 0.0,
         cache_sec = 0.0, cache_cpu = 0.0;
  std::size_t total_n = 0;
  kvq::llama::StreamBytes full_window_bytes;  // the cache after the last full-length window
  std::size_t full_window_total = 0, full_window_len = 0;
  int w = 0;
  auto timed = [](auto&& f, double& sec, double& cpu) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    auto r = f();
    sec += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cpu += static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
    return r;
  };
  auto mean_of = [](const std::vector<double>& v) {
    double s = 0.0;
    for (double x : v) s += x;
    return s / static_cast<double>(v.size());
  };
  for (std::size_t start = 0; start < ids.size() && (max_windows < 0 || w < max_windows); ++w) {
    const std::size_t len = std::min<std::size_t>(static_cast<std::size_t>(ctx), ids.size() - start);
    std::vector<int> in, tgt;
    if (bos >= 0) {
      in.push_back(static_cast<int>(bos));
      in.insert(in.end(), ids.begin() + static_cast<std::ptrdiff_t>(start), ids.begin() + static_cast<std::ptrdiff_t>(start + len - 1));
      tgt.assign(ids.begin() + static_cast<std::ptrdiff_t>(start), ids.begin() + static_cast<std::ptrdiff_t>(start + len));
    } else {
      if (len < 2) break;
      in.assign(ids.begin() + static_cast<std::ptrdiff_t>(start), ids.begin() + static_cast<std::ptrdiff_t>(start + len - 1));
      tgt.assign(ids.begin() + static_cast<std::ptrdiff_t>(start + 1), ids.begin() + static_cast<std::ptrdiff_t>(start + len));
    }
    start += len;
    std::vector<double> nll, nll_cache;
    double sec = 0.0, cpu = 0.0;
    if (run_exact) {
      kvq::llama::AttentionBackend& backend = (rec && w == 0) ? static_cast<kvq::llama::AttentionBackend&>(*rec) : exact;
      nll = timed([&] { return model.nll(in, tgt, backend, static_cast<int>(chunk)); }, sec, cpu);
      total_sec += sec;
      total_cpu += cpu;
      double sum = 0.0;
      for (double x : nll) sum += x;
      total_nll += sum;
      const double mean = sum / static_cast<double>(nll.size());
      std::printf("window %d: %zu %ss, nll %.6f nats/%s, %.4f bits/%s, ppl %.4f, %.2f s (cpu %.2f s)\n", w,
                  nll.size(), unit, mean, unit, mean / std::log(2.0), unit, std::exp(mean), sec, cpu);
    }
    if (cached) {
      double csec = 0.0, ccpu = 0.0;
      nll_cache = timed([&] { return model.nll(in, tgt, *cached, static_cast<int>(chunk)); }, csec, ccpu);
      cache_sec += csec;
      cache_cpu += ccpu;
      const double mean = mean_of(nll_cache);
      for (double x : nll_cache) total_cache += x;
      std::printf("window %d cache: nll %.6f nats/%s, ppl %.4f", w, mean, unit, std::exp(mean));
      if (run_exact) {
        double wd = 0.0;
        for (std::size_t i = 0; i < nll.size(); ++i) {
          const double d = nll_cache[i] - nll[i];
          wd += d;
          sum_d += d;
          sum_d2 += d * d;
        }
        wd /= static_cast<double>(nll.size());
        std::printf(", change %+.6f nats/%s (ppl %+.3f%%)", wd, unit, 100.0 * std::expm1(wd));
      }
      std::printf(", %.2f s (cpu %.2f s)\n", csec, ccpu);
      if (len == static_cast<std::size_t>(ctx) || full_window_len == 0) {
        full_window_bytes = kvq::llama::stream_bytes(cached->cache());
        full_window_total = cached->cache().bytes_used();
        full_window_len = in.size();
      }
    }
    if (use_keys) {
      if (!keys_loaded) {
        double ksec = 0.0, kcpu = 0.0;
        keyref.full.push_back(nll);
        keyref.shorter.push_back(
            timed([&] { return kvq::llama::short_context_nll(model, in, tgt, bos >= 0, short_ctx, exact, static_cast<int>(chunk)); },
                  ksec, kcpu));
        key_sec += ksec;
      }
      const std::size_t n_tok = run_exact ? nll.size() : nll_cache.size();
      if (static_cast<std::size_t>(w) >= keyref.full.size() || keyref.full[static_cast<std::size_t>(w)].size() != n_tok)
        fail(Errc::corrupt_data, "--key-tokens " + opt.at("key-tokens") + " does not hold window " + std::to_string(w) +
                                     " with " + std::to_string(n_tok) + " tokens");
      const auto& full = keyref.full[static_cast<std::size_t>(w)];
      const auto& shorter = keyref.shorter[static_cast<std::size_t>(w)];
      if (keys_loaded && run_exact) {
        double worst = 0.0;
        for (std::size_t i = 0; i < n_tok; ++i) worst = std::max(worst, std::fabs(nll[i] - full[i]));
        if (worst > 1e-4)
          std::fprintf(stderr, "warning: exact NLL differs from --key-tokens file by up to %.2e nats\n", worst);
      }
      const auto keys = kvq::llama::key_token_indices(full, shorter, key_margin);
      double wb = 0.0, wc = 0.0;
      for (std::size_t i : keys) {
        wb += full[i];
        key_short_sum += shorter[i];
        if (cached) {
          const double d = nll_cache[i] - full[i];
          wc += nll_cache[i];
          key_d += d;
          key_d2 += d * d;
        }
      }
      key_base += wb;
      key_cache += wc;
      key_n += keys.size();
      std::printf("window %d key tokens: %zu (short - full NLL > %.2f nats), exact nll on them %.6f", w, keys.size(),
                  key_margin, keys.empty() ? 0.0 : wb / double(keys.size()));
      if (cached && !keys.empty())
        std::printf(", cache %.6f, change %+.6f nats (ppl %+.3f%%)", wc / double(keys.size()),
                    (wc - wb) / double(keys.size()), 100.0 * std::expm1((wc - wb) / double(keys.size())));
      std::printf("\n");
    }
    total_n += run_exact ? nll.size() : nll_cache.size();
    if (nll_out) {
      const std::size_t n_tok = run_exact ? nll.size() : nll_cache.size();
      for (std::size_t i = 0; i < n_tok; ++i) {
        std::fprintf(nll_out, "%d %zu ", w, i);
        if (run_exact) std::fprintf(nll_out, "%.6f ", nll[i]); else std::fprintf(nll_out, "na ");
        if (cached) std::fprintf(nll_out, "%.6f\n", nll_cache[i]); else std::fprintf(nll_out, "na\n");
      }
    }
    std::fflush(stdout);
    std::fprintf(stderr, "[%d windows, %zu %ss, %.1f s]\n", w + 1, total_n, unit, total_sec + cache_sec);
    if (rec && w == 0 && run_exact) check_dumps(opt.at("dumps"), *rec, c, static_cast<int>(in.size()));
  }
  if (total_n == 0) fail(Errc::invalid_argument, "no tokens to evaluate");
  const double n = static_cast<double>(total_n);
  if (use_keys && !keys_loaded) keyref.save(opt.at("key-tokens"));
  double key_dm = 0.0, key_se = 0.0;
  if (use_keys) {
    const double kn = static_cast<double>(std::max<std::size_t>(key_n, 1));
    std::printf("key tokens: %zu of %zu %ss (%.2f%%): exact NLL with the full window lower than with the last %lld to "
                "%lld inputs by more than %.2f nats; exact nll on them %.6f full, %.6f short",
                key_n, total_n, unit, 100.0 * double(key_n) / n, key_short, key_short + key_block - 1, key_margin,
                key_base / kn, key_short_sum / kn);
    if (!keys_loaded) std::printf(" (short-context pass %.1f s)", key_sec);
    std::printf("\n");
    if (cached && key_n > 0) {
      key_dm = key_d / kn;
      key_se = std::sqrt(std::max(0.0, key_d2 / kn - key_dm * key_dm) / kn);
      std::printf("key-token change vs exact: %+.6f nats/%s (per-token standard error %.6f), ppl %+.4f%%\n", key_dm,
                  unit, key_se, 100.0 * std::expm1(key_dm));
    }
  }
  if (run_exact) {
    const double mean = total_nll / n;
    std::printf("total: %d windows, %zu %ss, nll %.6f nats/%s, %.6f bits/%s, ppl %.6f, %.1f s (%.2f s/window, cpu %.2f s/window)\n",
                w, total_n, unit, mean, unit, mean / std::log(2.0), unit, std::exp(mean), total_sec,
                total_sec / w, total_cpu / w);
  }
  if (cached) {
    const double mean = total_cache / n;
    std::printf("cache total: %d windows, %zu %ss, nll %.6f nats/%s, %.6f bits/%s, ppl %.6f, %.1f s (%.2f s/window, cpu %.2f s/window)\n",
                w, total_n, unit, mean, unit, mean / std::log(2.0), unit, std::exp(mean), cache_sec, cache_sec / w,
                cache_cpu / w);
    std::printf("cache memory after a %zu-token window: %zu bytes, K %.4f bits/value (%zu bytes), V %.4f bits/value (%zu bytes)\n",
                full_window_len, full_window_total, full_window_bytes.k_bits(), full_window_bytes.k_bytes,
                full_window_bytes.v_bits(), full_window_bytes.v_bytes);
    double dm = 0.0, se = 0.0;
    if (run_exact) {
      dm = sum_d / n;
      se = std::sqrt(std::max(0.0, sum_d2 / n - dm * dm) / n);
      std::printf("change vs exact: %+.6f nats/%s (per-token standard error %.6f), ppl %+.4f%%\n", dm, unit, se,
                  100.0 * std::expm1(dm));
    }
    // One machine-readable line (scripts/pareto.sh).
    std::printf("result spec=%s prefill=%s readout=%s chunk=%lld windows=%d tokens=%zu nll=%.6f ppl=%.6f base_nll=%s "
                "delta=%s delta_se=%s k_bits=%.4f v_bits=%.4f bytes=%zu window_tokens=%zu cpu_s=%.1f key_tokens=%s "
                "key_margin=%s key_nll=%s key_base_nll=%s key_delta=%s key_delta_se=%s\n",
                kvq::CacheSpec::parse(spec_text).to_string().c_str(), prefill.c_str(), readout.c_str(), chunk, w, total_n, mean,
                std::exp(mean), run_exact ? std::to_string(total_nll / n).c_str() : "na",
                run_exact ? std::to_string(dm).c_str() : "na", run_exact ? std::to_string(se).c_str() : "na",
                full_window_bytes.k_bits(), full_window_bytes.v_bits(), full_window_total, full_window_len,
                cache_cpu, use_keys ? std::to_string(key_n).c_str() : "na",
                use_keys ? std::to_string(key_margin).c_str() : "na",
                use_keys && key_n ? std::to_string(key_cache / double(key_n)).c_str() : "na",
                use_keys && key_n ? std::to_string(key_base / double(key_n)).c_str() : "na",
                use_keys && key_n ? std::to_string(key_dm).c_str() : "na",
                use_keys && key_n ? std::to_string(key_se).c_str() : "na");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const kvq::Error& e) {
    std::fprintf(stderr, "kvq-ppl: %s: %s\n", std::string(kvq::to_string(e.code())).c_str(), e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvq-ppl: %s\n", e.what());
  }
  return 1;
}

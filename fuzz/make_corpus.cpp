// Writes the seed corpora of the fuzz targets: fuzz/corpus/<target>/seed-*.
// Built with KVQ_FUZZ=ON as kvq_fuzz_corpus; regenerate with
//   build-fuzz/fuzz/kvq_fuzz_corpus fuzz/corpus
// (after a codec is added to codec_table(), so the seeds' codec bytes -- an
// index into fuzz_support.hpp's codec_specs() -- cover it). Output is a
// deterministic function of the library: same build, same files. Seeds are
// small, valid inputs (encoded tiles of seeded random data, NumPy and GGUF
// files written here from the formats' specs); the fuzzer mutates from there.
#include "fuzz_support.hpp"
#include "snapshot_configs.hpp"

#include <kvq/core/rng.hpp>

#include <filesystem>
#include <limits>
#include <fstream>
#include <string_view>

namespace {
namespace fs = std::filesystem;
using Bytes = std::vector<unsigned char>;

void write(const fs::path& dir, int& counter, const Bytes& b) {
  fs::create_directories(dir);
  char name[32];
  std::snprintf(name, sizeof name, "seed-%03d", counter++);
  std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()),
                                                    static_cast<std::streamsize>(b.size()));
}
void put_u16(Bytes& b, unsigned v) { b.push_back(v & 0xFF); b.push_back((v >> 8) & 0xFF); }
void put_u32(Bytes& b, std::uint32_t v) { for (int i = 0; i < 4; ++i) b.push_back((v >> (8 * i)) & 0xFF); }
void put_u64(Bytes& b, std::uint64_t v) { for (int i = 0; i < 8; ++i) b.push_back(static_cast<unsigned char>(v >> (8 * i))); }
void put_f32(Bytes& b, float f) { std::uint32_t x; std::memcpy(&x, &f, 4); put_u32(b, x); }
void put_str(Bytes& b, std::string_view s) { put_u64(b, s.size()); b.insert(b.end(), s.begin(), s.end()); }
void append(Bytes& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }

std::vector<float> gaussian(kvq::Rng& rng, std::size_t n, float sigma) {
  std::vector<float> x(n);
  for (auto& v : x) v = static_cast<float>(sigma * rng.normal());
  return x;
}

Bytes npy(std::string_view descr, std::string_view shape, std::size_t count, std::size_t item, int major) {
  std::string dict = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': " +
                     std::string(shape) + ", }";
  const std::size_t pre = major == 1 ? 10 : 12;
  dict.append((64 - (pre + dict.size() + 1) % 64) % 64, ' ');
  dict.push_back('\n');
  Bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(major), 0};
  if (major == 1) put_u16(b, static_cast<unsigned>(dict.size()));
  else put_u32(b, static_cast<std::uint32_t>(dict.size()));
  append(b, dict);
  for (std::size_t i = 0; i < count * item; ++i) b.push_back(static_cast<unsigned char>(i * 37 % 251 % 0x7B));
  return b;
}

Bytes gguf(bool with_q8) {
  Bytes b = {'G', 'G', 'U', 'F'};
  put_u32(b, 3);
  put_u64(b, with_q8 ? 2 : 1);  // tensors
  put_u64(b, 4);                 // metadata
  put_str(b, "general.architecture"); put_u32(b, 8); put_str(b, "llama");
  put_str(b, "general.alignment"); put_u32(b, 4); put_u32(b, 32);
  put_str(b, "llama.context_length"); put_u32(b, 10); put_u64(b, 256);
  put_str(b, "tokenizer.ggml.tokens"); put_u32(b, 9); put_u32(b, 8); put_u64(b, 2); put_str(b, "<s>"); put_str(b, "a");
  put_str(b, "w.f16"); put_u32(b, 2); put_u64(b, 4); put_u64(b, 2); put_u32(b, 1); put_u64(b, 0);
  if (with_q8) { put_str(b, "w.q8"); put_u32(b, 1); put_u64(b, 32); put_u32(b, 8); put_u64(b, 32); }
  while (b.size() % 32) b.push_back(0);
  for (int i = 0; i < 8; ++i) put_u16(b, 0x3C00u + static_cast<unsigned>(i));  // 1.0, ...
  if (with_q8) {
    while (b.size() % 32) b.push_back(0);
    put_u16(b, 0x2C00u);  // d = 1/16
    for (int i = 0; i < 32; ++i) b.push_back(static_cast<unsigned char>(i - 16));
  }
  return b;
}

// cache_pool: [spec][budget] then [op][a][b] triples (op % 8: 0 create,
// 1 append, 2 fork, 3 truncate, 4 snapshot/restore, 5 destroy, 6 batched
// attend, 7 a large append). Each seed is a short scenario for every spec:
// grow and fork, fork then diverge, roll back, exhaust a small budget.
void pool_seeds(const fs::path& dir, int& counter) {
  const std::vector<Bytes> scenarios = {
      {0, 0, 0, 1, 0, 20, 1, 0, 21, 6, 0, 3, 3, 0, 3, 1, 0, 5},                   // append, attend, roll back
      {0, 0, 0, 7, 0, 90, 2, 0, 0, 1, 1, 5, 1, 0, 7, 6, 1, 0, 3, 1, 3, 6, 0, 0},  // fork, diverge, attend
      {0, 0, 0, 0, 0, 0, 7, 0, 150, 7, 1, 151, 7, 0, 152, 2, 0, 0, 7, 2, 153, 3, 0, 1},  // exhaust the budget
      {0, 0, 0, 7, 0, 0, 2, 0, 0, 4, 0, 1, 5, 0, 0, 1, 0, 4, 6, 1, 0},            // snapshot/restore, destroy
  };
  for (unsigned char spec = 0; spec < 4; ++spec)
    for (const Bytes& s : scenarios)
      for (unsigned char budget : {static_cast<unsigned char>(3), static_cast<unsigned char>(40)}) {
        Bytes b = {spec, budget};
        b.insert(b.end(), s.begin(), s.end());
        write(dir, counter, b);
      }
}

// snapshot_restore: [control byte][snapshot]. Control = config | position << 2;
// bit 7 clear, so the target refits the checksum of a mutated snapshot.
void snapshot_seeds(const fs::path& dir, int& counter) {
  const auto& configs = kvq::fuzz::snapshot_configs();
  for (std::size_t i = 0; i < configs.size(); ++i) {
    const std::size_t max = configs[i].shape.max_context;
    // Empty, inside the sinks/window, past the first demotions (and, for the
    // 128-token pc4 tile, past its first tile), then a rollback that leaves
    // an undo log and a lowered floor behind.
    for (std::size_t n : {std::size_t{0}, std::size_t{3}, max / 2, max - 2}) {
      kvq::Cache c = kvq::fuzz::make_snapshot_cache(i);
      kvq::fuzz::fill_snapshot_cache(c, n);
      if (n == max / 2 && n > 4) c.truncate(n - 2);
      const auto snap = kvq::snapshot_bytes(c);
      Bytes b = {static_cast<unsigned char>(i | ((n % 32) << 2))};
      const auto* p = reinterpret_cast<const unsigned char*>(snap.data());
      b.insert(b.end(), p, p + snap.size());
      write(dir, counter, b);
      if (n == 3) {  // truncations: the target refits the checksum, the parser must refuse them
        for (std::size_t cut : {std::size_t{9}, std::size_t{40}, snap.size() / 2, snap.size() - 9}) {
          Bytes t(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(std::min(cut, b.size())));
          write(dir, counter, t);
        }
      }
    }
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: kvq_fuzz_corpus OUTDIR (e.g. fuzz/corpus)\n");
    return 2;
  }
  const fs::path out = argv[1];
  const auto& specs = kvq::fuzz::codec_specs();
  kvq::Rng rng(20240917);
  int nd = 0, ne = 0, nc = 0, nn = 0, ng = 0, nm = 0;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    for (unsigned dim_byte : {3u, 7u}) {  // head_dim 32, 64
      const std::size_t dim = 8 * (1 + dim_byte);
      const kvq::AnyCodec c = kvq::make_codec(specs[i], dim);
      const std::size_t n = c.tokens_per_tile() * dim;
      const auto x = gaussian(rng, n, dim_byte == 3 ? 1.0f : 30.0f);
      std::vector<std::byte> tile(c.bytes_per_tile());
      c.encode_tile(x.data(), tile.data());
      const auto* tb = reinterpret_cast<const unsigned char*>(tile.data());
      // codec_decode: [codec][dim][seed] + a valid tile
      Bytes d = {static_cast<unsigned char>(i), static_cast<unsigned char>(dim_byte), 1};
      d.insert(d.end(), tb, tb + tile.size());
      write(out / "codec_decode", nd, d);
      // codec_encode: [codec][dim] + up to 64 floats (cycled to fill a tile)
      Bytes e = {static_cast<unsigned char>(i), static_cast<unsigned char>(dim_byte)};
      for (std::size_t k = 0; k < std::min<std::size_t>(n, 64); ++k) put_f32(e, x[k]);
      write(out / "codec_encode", ne, e);
      // cli_decode: argument line + stdin
      Bytes cl;
      append(cl, "decode --codec " + specs[i] + " --dim " + std::to_string(dim) + "\n");
      cl.insert(cl.end(), tb, tb + tile.size());
      write(out / "cli_decode", nc, cl);
      if (c.tokens_per_tile() == 1) {
        Bytes ce;
        append(ce, "encode --codec " + specs[i] + " --dim " + std::to_string(dim) + "\n");
        for (std::size_t k = 0; k < n; ++k) put_f32(ce, x[k]);
        write(out / "cli_decode", nc, ce);
      }
    }
  }
  // Encoder edge values: denormals, huge, mixed signs, one NaN.
  for (float v : {1e-40f, 3e4f, 7e4f, -6.5e4f, 1e30f, std::numeric_limits<float>::quiet_NaN()}) {
    Bytes e = {0, 3};
    for (int k = 0; k < 32; ++k) put_f32(e, k % 5 == 0 ? v : static_cast<float>(k) * (k % 2 ? 1e-3f : -1e-3f));
    for (unsigned char ci : {static_cast<unsigned char>(0), static_cast<unsigned char>(2),
                             static_cast<unsigned char>(specs.size() - 1)}) {
      e[0] = ci;
      write(out / "codec_encode", ne, e);
    }
  }
  write(out / "npy_reader", nn, npy("<f2", "(2, 3)", 6, 2, 1));
  write(out / "npy_reader", nn, npy("<f4", "(4,)", 4, 4, 1));
  write(out / "npy_reader", nn, npy("<f8", "(1, 2, 2)", 4, 8, 2));
  write(out / "npy_reader", nn, npy("<f4", "()", 1, 4, 3));
  write(out / "gguf_reader", ng, gguf(false));
  write(out / "gguf_reader", ng, gguf(true));
  for (const char* name : {"q8_0", "q4_0", "q4_1", "q3_1", "q2_1", "pc4", "pc3/g64", "pc2/g1024", "pc4/g32", "turbo4"}) {
    for (std::uint32_t dim : {64u, 128u, 24u}) {
      Bytes m;
      put_u32(m, dim);
      append(m, name);
      write(out / "make_codec", nm, m);
    }
  }
  int ns = 0;
  snapshot_seeds(out / "snapshot_restore", ns);
  int np = 0;
  pool_seeds(out / "cache_pool", np);
  std::printf("wrote %d + %d + %d + %d + %d + %d + %d + %d seeds under %s\n", nd, ne, nc, nn, ng, nm, ns, np,
              out.c_str());
  return 0;
}

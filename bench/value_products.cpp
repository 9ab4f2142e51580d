// How much error reduced-precision value products (Cache::set_value_products:
// bf16, int8) add to attention outputs, on real Q/K/V activations, beside the
// error of the codec itself.
//
// Usage: kvq_bench_value_products DUMP_DIR
// DUMP_DIR holds q.npy, k.npy, v.npy (fp16, [layers, heads, T, head_dim]) as in
// ../shared/data/kv-dumps/wt2-byte-a (its meta.json has the shapes; this program
// reads the shapes from the .npy headers). For every layer, the cache holds the
// first T - 64 tokens, then each of the last 64 tokens is appended and attended
// by its own queries (a decode step). Printed: relative RMS error of the
// outputs against an f32 cache (the codec's error, f32 products), and the RMS
// difference that bf16 / int8 products add to the f32-product outputs, both
// relative to the f32 cache's output RMS.
#include <kvq/kvq.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

// A little-endian fp16 .npy (format 1.0, C order): its shape and values.
struct Npy {
  std::vector<std::size_t> shape;
  std::vector<std::uint16_t> bits;
};

Npy read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char pre[10];
  if (!f.read(pre, 10) || std::string(pre + 1, 5) != "NUMPY") {
    std::fprintf(stderr, "kvq_bench_value_products: %s is not a .npy file\n", path.c_str());
    std::exit(2);
  }
  const std::size_t header_len = static_cast<unsigned char>(pre[8]) | (static_cast<unsigned char>(pre[9]) << 8);
  std::string header(header_len, '\0');
  f.read(header.data(), static_cast<std::streamsize>(header_len));
  if (header.find("'<f2'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos) {
    std::fprintf(stderr, "kvq_bench_value_products: %s is not little-endian fp16 in C order\n", path.c_str());
    std::exit(2);
  }
  Npy n;
  const std::size_t open = header.find('(', header.find("'shape'")), close = header.find(')', open);
  std::size_t count = 1;
  for (std::size_t i = open + 1; i < close;) {
    const std::size_t end = header.find_first_of(",)", i);
    const std::string item = header.substr(i, end - i);
    if (item.find_first_of("0123456789") != std::string::npos) {
      n.shape.push_back(std::stoul(item));
      count *= n.shape.back();
    }
    i = end + 1;
  }
  n.bits.resize(count);
  if (n.shape.size() != 4 || !f.read(reinterpret_cast<char*>(n.bits.data()), static_cast<std::streamsize>(2 * count))) {
    std::fprintf(stderr, "kvq_bench_value_products: %s: expected [layers, heads, T, head_dim] fp16 data\n",
                 path.c_str());
    std::exit(2);
  }
  return n;
}

// Token t of `layer` from an [layers, heads, T, d] array, heads side by side.
void token(const Npy& a, std::size_t layer, std::size_t t, float* out) {
  const std::size_t heads = a.shape[1], n = a.shape[2], d = a.shape[3];
  for (std::size_t h = 0; h < heads; ++h)
    for (std::size_t j = 0; j < d; ++j)
      out[h * d + j] = kvq::half_bits_to_float(a.bits[((layer * heads + h) * n + t) * d + j]);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: kvq_bench_value_products DUMP_DIR\n");
    return 2;
  }
  const std::string dir = std::string(argv[1]) + "/";
  const Npy q = read_npy(dir + "q.npy"), k = read_npy(dir + "k.npy"), v = read_npy(dir + "v.npy");
  const std::size_t layers = q.shape[0], hq = q.shape[1], t_all = q.shape[2], d = q.shape[3], hkv = k.shape[1];
  const std::size_t steps = 64;
  std::printf("kvq value-product error on %s (%zu layers, %zu/%zu heads, %zu tokens, head_dim %zu; kernels: %s, "
              "bf16 path %s)\n\n",
              argv[1], layers, hq, hkv, t_all, d, kvq::kernels::target_name(),
              kvq::kernels::amx_accumulate_active()    ? "active (AMX tiles for groups)"
              : kvq::kernels::bf16_accumulate_active() ? "active"
                                                       : "inactive (f32)");
  std::printf("| spec | codec error (f32 products) | added by bf16 products | added by int8 products |\n");
  std::printf("|---|---|---|---|\n");
  for (const char* spec : {"k=q8_0,v=q4_0", "k=q4_0,v=q4_1", "k=q8_0,v=q3_1", "k=q8_0,v=q2_1"}) {
    double codec = 0, bf16 = 0, int8 = 0, norm = 0;
    for (std::size_t l = 0; l < layers; ++l) {
      const kvq::ModelShape shape = kvq::ModelShape::dense(1, hq, hkv, d, t_all);
      kvq::Cache c(shape, kvq::CacheSpec::parse(spec)), exact(shape, kvq::CacheSpec::parse("k=f32,v=f32"));
      std::vector<float> kt(hkv * d), vt(hkv * d), qt(hq * d), ref(hq * d), f32(hq * d), b(hq * d), i8(hq * d);
      for (std::size_t t = 0; t < t_all; ++t) {
        token(k, l, t, kt.data());
        token(v, l, t, vt.data());
        c.append(0, 1, kt.data(), vt.data());
        exact.append(0, 1, kt.data(), vt.data());
        if (t + steps < t_all) continue;
        token(q, l, t, qt.data());
        exact.attend(0, qt.data(), ref.data());
        c.attend(0, qt.data(), f32.data());
        c.set_value_products(kvq::ValueProducts::bf16);
        c.attend(0, qt.data(), b.data());
        c.set_value_products(kvq::ValueProducts::int8);
        c.attend(0, qt.data(), i8.data());
        c.set_value_products(kvq::ValueProducts::f32);
        for (std::size_t i = 0; i < hq * d; ++i) {
          codec += (f32[i] - ref[i]) * (f32[i] - ref[i]);
          bf16 += (b[i] - f32[i]) * (b[i] - f32[i]);
          int8 += (i8[i] - f32[i]) * (i8[i] - f32[i]);
          norm += ref[i] * ref[i];
        }
      }
    }
    std::printf("| %s | %.4f | %.5f | %.5f |\n", spec, std::sqrt(codec / norm), std::sqrt(bf16 / norm),
                std::sqrt(int8 / norm));
  }
  return 0;
}

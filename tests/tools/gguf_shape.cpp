// Tests of tools/common/gguf_shape.hpp (kvq plan --gguf): the real wt2-byte-a model's
// shape (when ../shared is present), hand-written GGUFs for GQA, the head_dim fallback,
// a hybrid whose head_count_kv array marks the attention layers, and clear errors
// naming a missing key.
#include "kvq_test.hpp"

#include "gguf_shape.hpp"
#include "support/gguf_writer.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace {

using kvq::test::GgufWriter;
using kvq::tools::GgufType;

struct Key {
  std::string name;
  std::vector<std::uint32_t> values;  // one: a u32 scalar; several: a u32 array
};

kvq::tools::GgufModel model_of(const std::vector<Key>& keys, const std::string& arch = "llama") {
  GgufWriter w;
  w.b = {'G', 'G', 'U', 'F'};
  w.u32(3);
  w.u64(0);  // tensors
  w.u64(keys.size() + 1);
  w.key("general.architecture", GgufType::string);
  w.str(arch);
  for (const Key& k : keys) {
    if (k.values.size() == 1) {
      w.key(k.name, GgufType::uint32);
      w.u32(k.values[0]);
    } else {
      w.key(k.name, GgufType::array);
      w.u32(static_cast<std::uint32_t>(GgufType::int32));
      w.u64(k.values.size());
      for (auto v : k.values) w.u32(v);
    }
  }
  return kvq::tools::gguf_model(kvq::tools::GgufFile::from_bytes(w.b, "test.gguf"), "test.gguf");
}

}  // namespace

TEST_CASE("gguf_shape: llama keys give the model shape", "[tools][gguf]") {
  const auto m = model_of({{"llama.block_count", {28}},
                           {"llama.attention.head_count", {24}},
                           {"llama.attention.head_count_kv", {8}},
                           {"llama.embedding_length", {3072}},
                           {"llama.context_length", {131072}}});
  CHECK(m.shape.n_layers == 28);
  CHECK(m.shape.n_q_heads == 24);
  CHECK(m.shape.n_kv_heads == 8);
  CHECK(m.shape.head_dim == 128);  // 3072 / 24
  CHECK(m.shape.max_context == 131072);
  CHECK(m.shape.n_kv_layers() == 28);
  // key_length wins over embedding_length / head_count; no head_count_kv = MHA.
  const auto g = model_of({{"gemma.block_count", {4}},
                           {"gemma.attention.head_count", {8}},
                           {"gemma.attention.key_length", {256}},
                           {"gemma.embedding_length", {1024}},
                           {"gemma.context_length", {8192}}},
                          "gemma");
  CHECK(g.shape.head_dim == 256);
  CHECK(g.shape.n_kv_heads == 8);
}

TEST_CASE("gguf_shape: a per-layer head_count_kv array marks a hybrid's attention layers", "[tools][gguf]") {
  const auto m = model_of({{"jamba.block_count", {8}},
                           {"jamba.attention.head_count", {32, 32, 32, 32, 32, 32, 32, 32}},
                           {"jamba.attention.head_count_kv", {0, 0, 0, 8, 0, 0, 0, 8}},
                           {"jamba.embedding_length", {4096}},
                           {"jamba.context_length", {262144}}},
                          "jamba");
  CHECK(m.shape.kv_layers == std::vector<std::size_t>{3, 7});
  CHECK(m.shape.n_kv_heads == 8);
  CHECK(m.shape.kv_ordinal(7) == 1);
  CHECK(m.shape.kv_ordinal(2) < 0);
}

TEST_CASE("gguf_shape: a missing key is an error naming it", "[tools][gguf]") {
  try {
    (void)model_of({{"llama.block_count", {2}}, {"llama.attention.head_count", {4}}, {"llama.embedding_length", {256}}});
    FAIL("accepted a file without llama.context_length");
  } catch (const kvq::Error& e) {
    CHECK(e.code() == kvq::Errc::invalid_argument);
    CHECK(std::string(e.what()).find("'llama.context_length' is missing") != std::string::npos);
  }
  CHECK_THROWS_AS(model_of({{"llama.block_count", {2}},
                            {"llama.attention.head_count", {4}},
                            {"llama.attention.head_count_kv", {3}},
                            {"llama.embedding_length", {256}},
                            {"llama.context_length", {64}}}),
                  kvq::Error);  // 4 q heads are not a multiple of 3 KV heads
}

TEST_CASE("gguf_shape: the real wt2-byte-a model", "[tools][gguf]") {
  const std::filesystem::path path = std::string(KVQ_SHARED_DIR) + "/models/wt2-byte-a.gguf";
  if (!std::filesystem::exists(path)) {
    WARN("../shared/models/wt2-byte-a.gguf not present: skipped");
    return;
  }
  const auto m = kvq::tools::gguf_model(kvq::tools::GgufFile::open(path), path.string());
  CHECK(m.architecture == "llama");
  CHECK(m.shape.n_layers == 8);
  CHECK(m.shape.n_q_heads == 8);
  CHECK(m.shape.n_kv_heads == 2);
  CHECK(m.shape.head_dim == 64);
  CHECK(m.shape.max_context > 0);
}

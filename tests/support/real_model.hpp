// The real model the [model] tests run: wt2-byte-a (../shared/models) with WikiText-2's test
// text, loaded once per test that asks; nullopt after a WARN when ../shared does not hold it.
#pragma once

#include "kvq_test.hpp"

#include "llama_model.hpp"
#include "npy.hpp"

#include <optional>
#include <vector>

namespace kvq::test {

struct RealModel {
  kvq::llama::LlamaModel model;
  std::vector<unsigned char> text;  // data/wikitext-2/test.txt, bytes

  // The text's first n bytes as next-byte prediction: inputs BOS and bytes 0 .. n-2,
  // targets bytes 0 .. n-1.
  void first_bytes(int n, std::vector<int>& in, std::vector<int>& tgt) const {
    in.assign(1, kvq::llama::kByteBos);
    tgt.clear();
    for (int i = 0; i < n; ++i) {
      if (i + 1 < n) in.push_back(kvq::llama::byte_token(text[static_cast<std::size_t>(i)]));
      tgt.push_back(kvq::llama::byte_token(text[static_cast<std::size_t>(i)]));
    }
  }
};

inline std::optional<RealModel> load_real_model() {
  const auto model_file = shared_file("models/wt2-byte-a.gguf");
  if (model_file.empty()) {
    WARN("skipped: ../shared/models/wt2-byte-a.gguf not found (set KVQ_SHARED_DIR)");
    return std::nullopt;
  }
  return RealModel{kvq::llama::LlamaModel::load(model_file),
                   kvq::tools::detail::read_file_bytes(shared_dir() / "data/wikitext-2/test.txt")};
}

}  // namespace kvq::test

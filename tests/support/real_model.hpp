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

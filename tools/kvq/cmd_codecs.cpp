// kvq codecs: one line per codec with its cost at head_dim 128.
#include "cli.hpp"

#include <kvq/codec/registry.hpp>

#include <cstdio>
#include <string>

namespace {
int run(const kvq::cli::Args& args) {
  const auto dim = static_cast<std::size_t>(args.get_int("dim", 128));
  std::printf("%-10s %-12s %14s %16s  %s\n", "name", "family", ("bits/value@" + std::to_string(dim)).c_str(), "tokens/tile", "format");
  for (const auto& info : kvq::codec_table()) {
    const kvq::AnyCodec c = info.make(dim);
    std::printf("%-10s %-12s %14.4f %16zu  %s\n", std::string(info.name).c_str(),
                std::string(info.family).c_str(), c.bits_per_value(), c.tokens_per_tile(),
                std::string(info.summary).c_str());
  }
  return 0;
}
const kvq::cli::Command reg{"codecs", "list codecs: name, bits/value at --dim (default 128), tokens per tile", run};
}  // namespace

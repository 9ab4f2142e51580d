// The one place tests include Catch2, so both v2 (Debian bookworm) and v3 work.
#pragma once
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

#include <cstdlib>
#include <filesystem>
#include <string>

namespace kvq::test {
// ../shared beside the project root (real model, K/V dumps, WikiText-2), or "" when absent.
inline std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("KVQ_SHARED_DIR")) return env;
  std::filesystem::path p = KVQ_SHARED_DIR;
  return std::filesystem::exists(p) ? p : std::filesystem::path{};
}

// shared_dir()/relative if it exists, else "" (callers WARN and skip).
inline std::filesystem::path shared_file(const std::filesystem::path& relative) {
  const auto dir = shared_dir();
  if (dir.empty() || !std::filesystem::exists(dir / relative)) return {};
  return dir / relative;
}
}  // namespace kvq::test

// Binary stdin/stdout helpers of the `kvq` tool.
#pragma once

#include <kvq/core/error.hpp>

#include <cstddef>
#include <cstdio>
#include <vector>

namespace kvq::cli {

inline std::vector<std::byte> read_all(std::FILE* f) {
  std::vector<std::byte> data;
  std::byte buf[1 << 16];
  for (;;) {
    const std::size_t n = std::fread(buf, 1, sizeof buf, f);
    data.insert(data.end(), buf, buf + n);
    if (n < sizeof buf) break;
  }
  detail::require(!std::ferror(f), Errc::io_error, "cannot read input");
  return data;
}

inline void write_all(std::FILE* f, const void* data, std::size_t n) {
  // fwrite's buffer must not be null even for n == 0 (empty vectors have no data()).
  detail::require((n == 0 || std::fwrite(data, 1, n, f) == n) && std::fflush(f) == 0, Errc::io_error,
                  "cannot write output");
}

}  // namespace kvq::cli

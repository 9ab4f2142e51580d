// Fuzz target: tools/common/npy.hpp's parse_npy on arbitrary bytes.
//
// Oracle: parse_npy returns or throws kvq::Error (corrupt_data / unsupported);
// a returned array's element count matches its shape. Run with
// -rss_limit_mb=512 -malloc_limit_mb=256: a hostile header must not make the
// reader allocate beyond what the input's size justifies.
#include "fuzz_support.hpp"

#include "npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto a = kvq::tools::parse_npy({data, size}, "fuzz");
    std::size_t count = 1;
    for (std::size_t d : a.shape) count *= d;
    kvq::fuzz::check(count == a.size(), "npy: element count does not match the shape");
    kvq::fuzz::check(a.size() * 2 <= size, "npy: more elements than the file can hold");
  } catch (const kvq::Error& e) {
    kvq::fuzz::check(e.code() == kvq::Errc::corrupt_data || e.code() == kvq::Errc::unsupported,
                     std::string("npy: unexpected error code ") + std::string(kvq::to_string(e.code())));
  }
  return 0;
}

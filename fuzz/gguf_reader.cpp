// Fuzz target: tools/common/gguf.hpp's GgufFile on arbitrary bytes, including
// every accessor a model loader uses on what it parsed.
//
// Oracle: parsing returns or throws kvq::Error; on success every metadata
// value and array element can be read back and every tensor either converts
// to float32 (element count = shape product) or is refused with
// Errc::unsupported. Run with -rss_limit_mb=512 -malloc_limit_mb=256.
#include "fuzz_support.hpp"

#include "gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using kvq::fuzz::check;
  std::optional<kvq::tools::GgufFile> f;
  try {
    f.emplace(kvq::tools::GgufFile::from_bytes(std::vector<unsigned char>(data, data + size), "fuzz"));
  } catch (const kvq::Error& e) {
    check(e.code() == kvq::Errc::corrupt_data, std::string("gguf: parse failed with ") +
                                                   std::string(kvq::to_string(e.code())));
    return 0;
  }
  std::size_t touched = 0;
  for (const auto& [key, v] : f->metadata()) {
    if (const auto* arr = std::get_if<kvq::tools::GgufValue::Array>(&v.value))
      for (std::size_t i = 0; i < arr->size() && i < 64; ++i) touched += arr->at(i).is_integer();
    try {
      touched += f->get_uint(key) & 1;
    } catch (const kvq::Error& e) {
      check(e.code() == kvq::Errc::corrupt_data, "gguf: get_uint failed with an unexpected code");
    }
  }
  for (const auto& t : f->tensors()) {
    check(f->tensor_bytes(t).size() == t.n_bytes, "gguf: tensor_bytes size differs from n_bytes");
    try {
      const auto v = f->tensor_f32(t);
      check(v.size() == t.n_elements(), "gguf: tensor_f32 element count differs from the shape");
    } catch (const kvq::Error& e) {
      check(e.code() == kvq::Errc::unsupported, "gguf: tensor_f32 failed with an unexpected code");
    }
  }
  (void)touched;
  return 0;
}

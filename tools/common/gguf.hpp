// A defensive reader of GGUF model files (versions 2 and 3), written from the GGUF spec.
//
// kvq evaluates its compressed K/V caches by the perplexity of a real llama model stored in
// GGUF. This reader loads the whole file into memory, parses the header, every metadata
// key/value (all scalar types, strings, nested arrays), the tensor infos and the alignment
// (`general.alignment`, default 32), and converts F32, F16, BF16 and Q8_0 tensors to float32
// on request. Every count, length, offset and tensor extent is checked against the file size
// before use, so truncated or hostile files produce Errc::corrupt_data, never a crash or an
// allocation larger than the file.
#pragma once

#include "npy.hpp"  // half/bf16 conversion, little-endian loads, read_file_bytes

#include <kvq/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kvq::tools {

enum class GgufType : std::uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6,
  boolean = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

// ggml tensor types this reader can convert (others are listed but refused on load).
enum class GgmlType : std::uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, bf16 = 30,
};

// One metadata value. Integers keep their signedness, floats widen to double; arrays hold
// their element type and elements.
struct GgufValue {
  // Numeric and bool elements stay in their packed little-endian file encoding (so memory
  // stays proportional to the file); strings and nested arrays are parsed into `items`.
  struct Array {
    GgufType type = GgufType::uint8;
    std::uint64_t count = 0;
    std::vector<unsigned char> raw;  // count * element size bytes, numeric/bool types only
    std::vector<GgufValue> items;    // string / array element types only

    std::size_t size() const noexcept { return static_cast<std::size_t>(count); }
    // Element i as a GgufValue (decoded on demand for numeric types), returned by value.
    GgufValue at(std::size_t i) const;
  };
  GgufType type = GgufType::uint8;
  std::variant<std::uint64_t, std::int64_t, double, bool, std::string, Array> value;

  bool is_integer() const noexcept {
    return std::holds_alternative<std::uint64_t>(value) || std::holds_alternative<std::int64_t>(value);
  }
};

namespace detail {
inline std::uint64_t gguf_scalar_size(GgufType t) noexcept {
  switch (t) {
    case GgufType::uint8: case GgufType::int8: case GgufType::boolean: return 1;
    case GgufType::uint16: case GgufType::int16: return 2;
    case GgufType::uint32: case GgufType::int32: case GgufType::float32: return 4;
    case GgufType::uint64: case GgufType::int64: case GgufType::float64: return 8;
    default: return 0;  // string, array: variable size
  }
}
// Decodes one scalar of type t (not string/array) from p.
inline GgufValue gguf_decode_scalar(GgufType t, const unsigned char* p) {
  GgufValue v;
  v.type = t;
  switch (t) {
    case GgufType::uint8: v.value = std::uint64_t{p[0]}; break;
    case GgufType::int8: v.value = std::int64_t{static_cast<std::int8_t>(p[0])}; break;
    case GgufType::uint16: v.value = std::uint64_t{load_u16le(p)}; break;
    case GgufType::int16: v.value = std::int64_t{static_cast<std::int16_t>(load_u16le(p))}; break;
    case GgufType::uint32: v.value = std::uint64_t{load_u32le(p)}; break;
    case GgufType::int32: v.value = std::int64_t{static_cast<std::int32_t>(load_u32le(p))}; break;
    case GgufType::uint64: v.value = load_u64le(p); break;
    case GgufType::int64: v.value = static_cast<std::int64_t>(load_u64le(p)); break;
    case GgufType::float32: v.value = static_cast<double>(load_f32le(p)); break;
    case GgufType::float64: v.value = load_f64le(p); break;
    case GgufType::boolean: v.value = p[0] != 0; break;
    default: kvq::detail::fail(Errc::invalid_argument, "gguf_decode_scalar: not a scalar type");
  }
  return v;
}
}  // namespace detail

inline GgufValue GgufValue::Array::at(std::size_t i) const {
  kvq::detail::require(i < count, Errc::out_of_range, "GGUF array index out of range");
  const std::uint64_t sz = detail::gguf_scalar_size(type);
  if (sz == 0) return items[i];
  return detail::gguf_decode_scalar(type, raw.data() + i * sz);
}

struct GgufTensorInfo {
  std::string name;
  std::vector<std::uint64_t> ne;  // ne[0] is the innermost (contiguous) dimension
  GgmlType type = GgmlType::f32;
  std::uint64_t offset = 0;   // relative to the data section
  std::uint64_t n_bytes = 0;  // bytes in the file
  std::uint64_t n_elements() const noexcept {
    std::uint64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
  }
};

class GgufFile {
 public:
  static GgufFile open(const std::filesystem::path& path) {
    GgufFile f;
    f.name_ = path.string();
    f.bytes_ = detail::read_file_bytes(path);
    f.parse();
    return f;
  }
  static GgufFile from_bytes(std::vector<unsigned char> bytes, std::string name = "gguf") {
    GgufFile f;
    f.name_ = std::move(name);
    f.bytes_ = std::move(bytes);
    f.parse();
    return f;
  }

  std::uint32_t version() const noexcept { return version_; }
  std::uint64_t alignment() const noexcept { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const noexcept { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const noexcept { return tensors_; }

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  const GgufValue& get(const std::string& key) const {
    auto it = kv_.find(key);
    if (it == kv_.end()) kvq::detail::fail(Errc::corrupt_data, name_ + ": missing metadata key '" + key + "'");
    return it->second;
  }
  std::uint64_t get_uint(const std::string& key) const {
    const auto& v = get(key);
    if (auto* u = std::get_if<std::uint64_t>(&v.value)) return *u;
    if (auto* i = std::get_if<std::int64_t>(&v.value); i && *i >= 0) return static_cast<std::uint64_t>(*i);
    kvq::detail::fail(Errc::corrupt_data, name_ + ": metadata '" + key + "' is not a non-negative integer");
  }
  std::int64_t get_int(const std::string& key) const {
    const auto& v = get(key);
    if (auto* i = std::get_if<std::int64_t>(&v.value)) return *i;
    if (auto* u = std::get_if<std::uint64_t>(&v.value); u && *u <= static_cast<std::uint64_t>(INT64_MAX))
      return static_cast<std::int64_t>(*u);
    kvq::detail::fail(Errc::corrupt_data, name_ + ": metadata '" + key + "' is not an integer");
  }
  double get_float(const std::string& key) const {
    const auto& v = get(key);
    if (auto* d = std::get_if<double>(&v.value)) return *d;
    if (auto* i = std::get_if<std::int64_t>(&v.value)) return static_cast<double>(*i);
    if (auto* u = std::get_if<std::uint64_t>(&v.value)) return static_cast<double>(*u);
    kvq::detail::fail(Errc::corrupt_data, name_ + ": metadata '" + key + "' is not a number");
  }
  bool get_bool(const std::string& key) const {
    const auto& v = get(key);
    if (auto* b = std::get_if<bool>(&v.value)) return *b;
    kvq::detail::fail(Errc::corrupt_data, name_ + ": metadata '" + key + "' is not a bool");
  }
  const std::string& get_string(const std::string& key) const {
    const auto& v = get(key);
    if (auto* s = std::get_if<std::string>(&v.value)) return *s;
    kvq::detail::fail(Errc::corrupt_data, name_ + ": metadata '" + key + "' is not a string");
  }
  const GgufValue::Array& get_array(const std::string& key) const {
    const auto& v = get(key);
    if (auto* a = std::get_if<GgufValue::Array>(&v.value)) return *a;
    kvq::detail::fail(Errc::corrupt_data, name_ + ": metadata '" + key + "' is not an array");
  }
  std::uint64_t get_uint_or(const std::string& key, std::uint64_t fallback) const {
    return has(key) ? get_uint(key) : fallback;
  }
  double get_float_or(const std::string& key, double fallback) const {
    return has(key) ? get_float(key) : fallback;
  }

  const GgufTensorInfo* find_tensor(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  const GgufTensorInfo& tensor(std::string_view name) const {
    if (const auto* t = find_tensor(name)) return *t;
    kvq::detail::fail(Errc::corrupt_data, name_ + ": missing tensor '" + std::string(name) + "'");
  }
  // The raw bytes of a tensor (validated to lie inside the file).
  std::span<const unsigned char> tensor_bytes(const GgufTensorInfo& t) const {
    check_data();
    check_owned(t);
    return {bytes_.data() + data_offset_ + t.offset, static_cast<std::size_t>(t.n_bytes)};
  }
  // A tensor converted to float32, in storage order (ne[0] fastest).
  std::vector<float> tensor_f32(const GgufTensorInfo& t) const {
    check_data();
    check_owned(t);
    std::vector<float> out(static_cast<std::size_t>(t.n_elements()));
    const unsigned char* p = bytes_.data() + data_offset_ + t.offset;
    switch (t.type) {
      case GgmlType::f32:
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = detail::load_f32le(p + 4 * i);
        break;
      case GgmlType::f16:
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = detail::half_to_float(detail::load_u16le(p + 2 * i));
        break;
      case GgmlType::bf16:
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = detail::bf16_to_float(detail::load_u16le(p + 2 * i));
        break;
      case GgmlType::q8_0:
        for (std::size_t b = 0; b < out.size() / 32; ++b) {
          const unsigned char* blk = p + 34 * b;
          const float d = detail::half_to_float(detail::load_u16le(blk));
          for (int j = 0; j < 32; ++j)
            out[32 * b + j] = d * static_cast<float>(static_cast<std::int8_t>(blk[2 + j]));
        }
        break;
      default:
        kvq::detail::fail(Errc::unsupported, name_ + ": tensor '" + t.name + "' has ggml type " +
                                                 std::to_string(static_cast<unsigned>(t.type)) +
                                                 ", which cannot be converted to float32 (F32, F16, BF16, Q8_0)");
    }
    return out;
  }
  std::vector<float> tensor_f32(std::string_view name) const { return tensor_f32(tensor(name)); }

  // Drops the file image once tensors have been converted; metadata and infos remain.
  void release_data() {
    bytes_.clear();
    bytes_.shrink_to_fit();
    released_ = true;
  }

 private:
  GgufFile() = default;

  // Elements per block and bytes per block of a ggml type, or {0,0} when unknown.
  static std::pair<std::uint64_t, std::uint64_t> block_layout(std::uint32_t type) {
    switch (static_cast<GgmlType>(type)) {
      case GgmlType::f32: return {1, 4};
      case GgmlType::f16: return {1, 2};
      case GgmlType::bf16: return {1, 2};
      case GgmlType::q8_0: return {32, 34};
      case GgmlType::q4_0: return {32, 18};
      case GgmlType::q4_1: return {32, 20};
      case GgmlType::q5_0: return {32, 22};
      case GgmlType::q5_1: return {32, 24};
    }
    return {0, 0};
  }

  void check_data() const {
    kvq::detail::require(!released_, Errc::invalid_argument, name_ + ": tensor data was released");
  }
  void check_owned(const GgufTensorInfo& t) const {
    kvq::detail::require(find_tensor(t.name) == &t, Errc::invalid_argument,
                         name_ + ": tensor info '" + t.name + "' does not belong to this file");
  }
  [[noreturn]] void bad(const std::string& msg) const {
    kvq::detail::fail(Errc::corrupt_data, name_ + ": " + msg);
  }
  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  void need(std::uint64_t n, const char* what) const {
    if (n > remaining()) bad(std::string("truncated while reading ") + what);
  }
  std::uint8_t u8(const char* what) {
    need(1, what);
    return bytes_[pos_++];
  }
  std::uint16_t u16(const char* what) {
    need(2, what);
    auto v = detail::load_u16le(&bytes_[pos_]);
    pos_ += 2;
    return v;
  }
  std::uint32_t u32(const char* what) {
    need(4, what);
    auto v = detail::load_u32le(&bytes_[pos_]);
    pos_ += 4;
    return v;
  }
  std::uint64_t u64(const char* what) {
    need(8, what);
    auto v = detail::load_u64le(&bytes_[pos_]);
    pos_ += 8;
    return v;
  }
  std::string str(const char* what) {
    const std::uint64_t n = u64(what);
    need(n, what);  // bounds the allocation by the file size
    std::string s(reinterpret_cast<const char*>(&bytes_[pos_]), static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return s;
  }
  // Smallest encoded size of one value of a type (bounds array counts before allocating).
  static std::uint64_t min_size(GgufType t) {
    switch (t) {
      case GgufType::uint8: case GgufType::int8: case GgufType::boolean: return 1;
      case GgufType::uint16: case GgufType::int16: return 2;
      case GgufType::uint32: case GgufType::int32: case GgufType::float32: return 4;
      case GgufType::uint64: case GgufType::int64: case GgufType::float64: return 8;
      case GgufType::string: return 8;
      case GgufType::array: return 12;
    }
    return 1;
  }
  static bool valid_type(std::uint32_t t) noexcept { return t <= 12; }

  GgufValue value(GgufType type, int depth) {
    if (const std::uint64_t sz = detail::gguf_scalar_size(type); sz != 0) {
      need(sz, "metadata value");
      GgufValue v = detail::gguf_decode_scalar(type, &bytes_[pos_]);
      if (type == GgufType::boolean && bytes_[pos_] > 1) bad("bool value is neither 0 nor 1");
      pos_ += static_cast<std::size_t>(sz);
      return v;
    }
    GgufValue v;
    v.type = type;
    if (type == GgufType::string) {
      v.value = str("string value");
      return v;
    }
    if (depth >= 8) bad("arrays nested too deeply");
    const std::uint32_t et = u32("array type");
    if (!valid_type(et)) bad("array of unknown value type " + std::to_string(et));
    const auto etype = static_cast<GgufType>(et);
    const std::uint64_t n = u64("array length");
    if (n > remaining() / min_size(etype)) bad("array length " + std::to_string(n) + " exceeds the file");
    GgufValue::Array arr;
    arr.type = etype;
    arr.count = n;
    if (const std::uint64_t sz = detail::gguf_scalar_size(etype); sz != 0) {
      const auto* p = &bytes_[pos_];
      if (etype == GgufType::boolean)
        for (std::uint64_t i = 0; i < n; ++i)
          if (p[i] > 1) bad("bool array element is neither 0 nor 1");
      arr.raw.assign(p, p + n * sz);
      pos_ += static_cast<std::size_t>(n * sz);
    } else {
      arr.items.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t i = 0; i < n; ++i) arr.items.push_back(value(etype, depth + 1));
    }
    v.value = std::move(arr);
    return v;
  }

  void parse() {
    if (bytes_.size() < 4 || std::memcmp(bytes_.data(), "GGUF", 4) != 0) bad("not a GGUF file (bad magic)");
    pos_ = 4;
    version_ = u32("version");
    if (version_ != 2 && version_ != 3)
      bad("unsupported GGUF version " + std::to_string(version_) + " (this reader handles 2 and 3)");
    const std::uint64_t n_tensors = u64("tensor count");
    const std::uint64_t n_kv = u64("metadata count");
    // Each kv needs at least a key length, a type and one byte; each tensor info at least 28 bytes.
    if (n_kv > remaining() / 13) bad("metadata count " + std::to_string(n_kv) + " exceeds the file");
    if (n_tensors > remaining() / 28) bad("tensor count " + std::to_string(n_tensors) + " exceeds the file");

    for (std::uint64_t i = 0; i < n_kv; ++i) {
      std::string key = str("metadata key");
      const std::uint32_t t = u32("metadata type");
      if (!valid_type(t)) bad("metadata '" + key + "' has unknown value type " + std::to_string(t));
      GgufValue v = value(static_cast<GgufType>(t), 0);
      if (!kv_.emplace(key, std::move(v)).second) bad("duplicate metadata key '" + key + "'");
    }
    alignment_ = 32;
    if (auto it = kv_.find("general.alignment"); it != kv_.end()) {
      const auto* a = std::get_if<std::uint64_t>(&it->second.value);
      if (!a || *a == 0 || (*a & (*a - 1)) != 0 || *a > (1u << 20))
        bad("general.alignment must be a power of two integer");
      alignment_ = *a;
    }

    tensors_.reserve(static_cast<std::size_t>(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      GgufTensorInfo t;
      t.name = str("tensor name");
      const std::uint32_t n_dims = u32("tensor rank");
      if (n_dims == 0 || n_dims > 4) bad("tensor '" + t.name + "' has rank " + std::to_string(n_dims));
      std::uint64_t count = 1;
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        const std::uint64_t n = u64("tensor dimension");
        if (n == 0 || n > (std::uint64_t{1} << 40) || count > (std::uint64_t{1} << 60) / n)
          bad("tensor '" + t.name + "' has an invalid dimension");
        count *= n;
        t.ne.push_back(n);
      }
      const std::uint32_t type = u32("tensor type");
      t.offset = u64("tensor offset");
      const auto [block, block_bytes] = block_layout(type);
      if (block == 0) bad("tensor '" + t.name + "' has unknown ggml type " + std::to_string(type));
      if (t.ne[0] % block != 0) bad("tensor '" + t.name + "' row is not a whole number of blocks");
      t.type = static_cast<GgmlType>(type);
      t.n_bytes = count / block * block_bytes;
      if (t.offset % alignment_ != 0) bad("tensor '" + t.name + "' offset is not aligned");
      if (!index_.emplace(t.name, tensors_.size()).second) bad("duplicate tensor '" + t.name + "'");
      tensors_.push_back(std::move(t));
    }
    data_offset_ = (pos_ + alignment_ - 1) / alignment_ * alignment_;
    if (data_offset_ > bytes_.size()) {
      if (!tensors_.empty()) bad("truncated before the tensor data");
      data_offset_ = bytes_.size();
    }
    const std::uint64_t data_size = bytes_.size() - data_offset_;
    for (const auto& t : tensors_)
      if (t.offset > data_size || t.n_bytes > data_size - t.offset)
        bad("tensor '" + t.name + "' extends past the end of the file");
  }

  std::string name_;
  std::vector<unsigned char> bytes_;
  std::size_t pos_ = 0;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::size_t data_offset_ = 0;
  bool released_ = false;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
};

}  // namespace kvq::tools

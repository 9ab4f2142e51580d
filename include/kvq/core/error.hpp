// kvq error reporting.
//
// Every failure kvq reports is a kvq::Error carrying an Errc and a one-line
// message that names the offending argument. Engines built with
// -fno-exceptions define KVQ_NO_EXCEPTIONS: failures then call the handler
// installed with set_error_handler (default: print the message and abort),
// which must not return. In both modes a failure is reported before any state
// is modified, so nothing already stored is lost.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

namespace kvq {

enum class Errc {
  invalid_argument,  // a parameter outside its documented domain
  shape_mismatch,    // sizes that do not fit together (head_dim, lengths)
  out_of_range,      // an index (layer, head, position) past the end
  non_finite,        // NaN or Inf where a finite value is required
  unsupported,       // a valid request this codec/build cannot serve
  corrupt_data,      // bytes that fail validation (truncated, foreign, bad checksum)
  io_error,          // a stream could not be read or written
  budget_exceeded,   // a cache pool's byte budget cannot hold the request
};

constexpr std::string_view to_string(Errc e) noexcept {
  switch (e) {
    case Errc::invalid_argument: return "invalid argument";
    case Errc::shape_mismatch: return "shape mismatch";
    case Errc::out_of_range: return "out of range";
    case Errc::non_finite: return "non-finite value";
    case Errc::unsupported: return "unsupported";
    case Errc::corrupt_data: return "corrupt data";
    case Errc::io_error: return "i/o error";
    case Errc::budget_exceeded: return "budget exceeded";
  }
  return "unknown error";
}

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

using ErrorHandler = void (*)(Errc, const char* message);

namespace detail {
inline ErrorHandler& error_handler() noexcept {
  static ErrorHandler handler = nullptr;
  return handler;
}
}  // namespace detail

// Only consulted when built with KVQ_NO_EXCEPTIONS. The handler must not return.
inline void set_error_handler(ErrorHandler h) noexcept { detail::error_handler() = h; }

namespace detail {
[[noreturn]] inline void fail(Errc code, const std::string& message) {
#ifndef KVQ_NO_EXCEPTIONS
  throw Error(code, message);
#else
  if (ErrorHandler h = error_handler()) h(code, message.c_str());
  std::fprintf(stderr, "kvq: %s: %s\n", std::string(to_string(code)).c_str(), message.c_str());
  std::abort();
#endif
}

inline void require(bool condition, Errc code, const std::string& message) {
  if (!condition) fail(code, message);
}
// A literal message: no std::string is built unless the check fails (hot
// paths such as Cache::attend must not allocate).
inline void require(bool condition, Errc code, const char* message) {
  if (!condition) fail(code, message);
}
}  // namespace detail

}  // namespace kvq

#include "kvq_test.hpp"

#include <kvq/core/scratch.hpp>

#include <cstdint>

TEST_CASE("scratch: small sizes live inside the object, large ones on the heap", "[core][scratch]") {
  kvq::detail::Scratch<float, 16> small(16), large(17);
  const auto inside = [](auto& s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* o = reinterpret_cast<const unsigned char*>(&s);
    return p >= o && p < o + sizeof(s);
  };
  CHECK(inside(small));
  CHECK_FALSE(inside(large));
  // Every element is usable (ASan checks the bounds in sanitized builds).
  for (int i = 0; i < 16; ++i) small.data()[i] = float(i);
  for (int i = 0; i < 17; ++i) large.data()[i] = float(i);
  CHECK(small.data()[15] == 15.0f);
  CHECK(large.data()[16] == 16.0f);
}

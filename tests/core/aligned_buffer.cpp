#include "kvq_test.hpp"

#include <kvq/core/aligned_buffer.hpp>

#include <cstdint>

TEST_CASE("aligned_buffer: alignment, zero fill, resize keeps contents, copies are deep",
          "[core][aligned_buffer]") {
  kvq::AlignedBuffer<float> a(100);
  CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0);
  for (float v : a) REQUIRE(v == 0.0f);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i);
  a.resize(1000);
  CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0);
  CHECK(a[99] == 99.0f);
  CHECK(a[100] == 0.0f);
  kvq::AlignedBuffer<float> b = a;
  b[5] = -1.0f;
  CHECK(a[5] == 5.0f);
  kvq::AlignedBuffer<float> c = std::move(b);
  CHECK(b.empty());
  CHECK(c[5] == -1.0f);
  c.resize(3);
  CHECK(c.size() == 3);
  CHECK(c.size_bytes() == 12);
  c.clear();
  CHECK(c.data() == nullptr);
}

#include "kvq_test.hpp"

#include <kvq/codec/registry.hpp>
#include <kvq/core/rng.hpp>

#include <vector>

TEST_CASE("registry: every listed codec is constructible by name and behaves like its type",
          "[codec][registry]") {
  for (const auto& info : kvq::codec_table()) {
    const kvq::AnyCodec c = kvq::make_codec(info.name, 128);
    CHECK(c.name() == info.name);
    CHECK(c.head_dim() == 128);
    CHECK(c.bits_per_value() > 1.0);
    CHECK(c.bits_per_value() < 17.0);
  }
  CHECK(kvq::make_codec("q4_0", 128).bits_per_value() == 4.5);
  CHECK(kvq::make_codec("q8_0", 64).bits_per_value() == 8.5);
  CHECK(kvq::make_codec("q2_1", 128).get_if<kvq::Q2_1>() != nullptr);
  CHECK(kvq::make_codec("q2_1", 128).get_if<kvq::Q4_0>() == nullptr);
}

TEST_CASE("registry: unknown names and unsupported dims are refused clearly", "[codec][registry]") {
  try {
    kvq::make_codec("q5_0", 128);
    FAIL("unknown codec accepted");
  } catch (const kvq::Error& e) {
    CHECK(e.code() == kvq::Errc::invalid_argument);
    CHECK(std::string(e.what()).find("q5_0") != std::string::npos);
  }
  CHECK_THROWS_AS(kvq::make_codec("q4_0", 100), kvq::Error);
}

TEST_CASE("registry: AnyCodec attention path equals the typed codec", "[codec][registry]") {
  kvq::Rng rng(9);
  const kvq::Q4_1 typed(64);
  const kvq::AnyCodec any = kvq::make_codec("q4_1", 64);
  std::vector<float> x(64), q(64), qw(64), a1(64, 0), a2(64, 0), o(64);
  for (auto& v : x) v = static_cast<float>(rng.normal());
  for (auto& v : q) v = static_cast<float>(rng.normal());
  std::vector<std::byte> t1(typed.bytes_per_tile()), t2(any.bytes_per_tile());
  typed.encode_tile(x.data(), t1.data());
  any.encode_tile(x.data(), t2.data());
  CHECK(t1 == t2);
  float s1, s2;
  typed.scores(q.data(), t1.data(), &s1);
  any.prepare_query(q.data(), qw.data());
  any.scores(qw.data(), t2.data(), &s2);
  CHECK(s1 == s2);
  const float w = 0.5f;
  typed.accumulate(a1.data(), &w, t1.data());
  any.accumulate(a2.data(), &w, t2.data());
  any.finish_output(a2.data(), o.data());
  CHECK(a1 == o);
}

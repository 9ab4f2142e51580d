// The committed conformance vectors (tests/vectors/*.txt, written by
// `kvq vectors`, format in docs/PORTING.md) against the scalar reference:
// encoding each input reproduces the committed bytes, and decode,
// prepare_query, scores, accumulate and finish_output reproduce the committed
// floats bit for bit. Also: every codec in codec_table() has vectors at
// head_dim 64 and 128 (a new codec must regenerate them), and the parser
// itself rejects a damaged file.
#include "kvq_test.hpp"
#include "support/same_bits.hpp"

#include <kvq/codec/registry.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

fs::path vectors_dir() { return fs::path(__FILE__).parent_path().parent_path() / "vectors"; }

// A parsed vector file: header values, and per tile the float/byte fields.
struct VectorFile {
  std::map<std::string, std::string> header;
  std::vector<float> query, query_work, output;
  struct Tile {
    std::vector<float> input, decoded, scores, weights, accumulator;
    std::vector<std::byte> bytes;
  };
  std::vector<Tile> tiles;
};

std::vector<float> read_floats(std::istream& in, std::size_t n) {
  std::vector<float> v(n);
  for (auto& f : v) {
    std::string tok;
    in >> tok;
    if (tok.size() != 8) throw std::runtime_error("bad float token '" + tok + "'");
    f = std::bit_cast<float>(static_cast<std::uint32_t>(std::stoul(tok, nullptr, 16)));
  }
  return v;
}
std::vector<std::byte> read_bytes(std::istream& in, std::size_t n) {
  std::vector<std::byte> v(n);
  for (auto& b : v) {
    std::string tok;
    in >> tok;
    if (tok.size() != 2) throw std::runtime_error("bad byte token '" + tok + "'");
    b = static_cast<std::byte>(std::stoul(tok, nullptr, 16));
  }
  return v;
}

VectorFile parse(std::istream& in) {
  VectorFile f;
  std::string key;
  bool ended = false;
  while (in >> key) {
    if (key[0] == '#') {
      std::getline(in, key);
      continue;
    }
    if (key == "end") {
      ended = true;
      break;
    }
    if (key == "tile") {
      std::size_t i;
      in >> i;
      if (i != f.tiles.size()) throw std::runtime_error("tiles out of order");
      f.tiles.emplace_back();
      continue;
    }
    std::string value;
    in >> value;
    if (key == "format") {  // "format kvq-vectors VERSION"
      in >> f.header["format_version"];
      f.header[key] = value;
      continue;
    }
    const bool is_float = key == "query" || key == "query_work" || key == "output" || key == "input" ||
                          key == "decoded" || key == "scores" || key == "weights" || key == "accumulator";
    if (key == "bytes" || is_float) {
      const std::size_t n = std::stoul(value);
      if (key == "query") f.query = read_floats(in, n);
      else if (key == "query_work") f.query_work = read_floats(in, n);
      else if (key == "output") f.output = read_floats(in, n);
      else {
        if (f.tiles.empty()) throw std::runtime_error(key + " before the first tile");
        auto& t = f.tiles.back();
        if (key == "bytes") t.bytes = read_bytes(in, n);
        else if (key == "input") t.input = read_floats(in, n);
        else if (key == "decoded") t.decoded = read_floats(in, n);
        else if (key == "scores") t.scores = read_floats(in, n);
        else if (key == "weights") t.weights = read_floats(in, n);
        else t.accumulator = read_floats(in, n);
      }
    } else {
      f.header[key] = value;
    }
  }
  if (!ended) throw std::runtime_error("missing 'end' (truncated file?)");
  return f;
}

using kvq::test::same_bits;

}  // namespace

TEST_CASE("vectors: every codec in the registry has committed vectors at d=64 and d=128", "[reliability][vectors]") {
  for (const auto& info : kvq::codec_table())
    for (int dim : {64, 128}) {
      const fs::path p = vectors_dir() / (std::string(info.name) + "-d" + std::to_string(dim) + ".txt");
      INFO(p.string() << ": regenerate with `kvq vectors --out tests/vectors`");
      CHECK(fs::exists(p));
    }
}

TEST_CASE("vectors: the scalar reference reproduces the committed vectors bit for bit", "[reliability][vectors]") {
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(vectors_dir())) {
    if (entry.path().extension() != ".txt") continue;
    ++files;
    INFO(entry.path().filename().string());
    std::ifstream in(entry.path());
    const VectorFile f = parse(in);
    REQUIRE(f.header.at("format") == "kvq-vectors");
    REQUIRE(f.header.at("format_version") == "1");
    const std::size_t dim = std::stoul(f.header.at("head_dim"));
    const kvq::AnyCodec c = kvq::make_codec(f.header.at("codec"), dim);
    const std::size_t g = c.tokens_per_tile();
    REQUIRE(std::stoul(f.header.at("tokens_per_tile")) == g);
    REQUIRE(std::stoul(f.header.at("bytes_per_tile")) == c.bytes_per_tile());
    REQUIRE(f.tiles.size() == std::stoul(f.header.at("tiles")));
    REQUIRE(!f.tiles.empty());

    std::vector<float> qw(dim), acc(dim, 0.0f), out(dim), y(g * dim), s(g);
    c.prepare_query(f.query.data(), qw.data());
    CHECK(same_bits(qw, f.query_work));
    std::vector<std::byte> bytes(c.bytes_per_tile());
    for (std::size_t t = 0; t < f.tiles.size(); ++t) {
      const auto& tile = f.tiles[t];
      INFO("tile " << t);
      REQUIRE(tile.input.size() == g * dim);
      c.encode_tile(tile.input.data(), bytes.data());
      CHECK(bytes == tile.bytes);
      // Decode, scores, accumulate from the committed bytes (a port's view).
      c.decode_tile(tile.bytes.data(), y.data());
      CHECK(same_bits(y, tile.decoded));
      c.scores(f.query_work.data(), tile.bytes.data(), s.data());
      CHECK(same_bits(s, tile.scores));
      // The porting tolerance (docs/PORTING.md) is met by the reference itself
      // against exact arithmetic: |s - q.x^| <= 1e-5 * sum |q_c x^_c| + 1e-30.
      // The score is in working space, but rotations preserve dot products, so
      // the exact value is the model-space query against the decoded row.
      for (std::size_t k = 0; k < g; ++k) {
        double exact = 0, mag = 0;
        for (std::size_t ch = 0; ch < dim; ++ch) {
          exact += double(f.query[ch]) * tile.decoded[k * dim + ch];
          mag += std::abs(double(f.query[ch]) * tile.decoded[k * dim + ch]);
        }
        REQUIRE(std::abs(tile.scores[k] - exact) <= 1e-5 * mag + 1e-30);
      }
      c.accumulate(acc.data(), tile.weights.data(), tile.bytes.data());
      CHECK(same_bits(acc, tile.accumulator));
    }
    c.finish_output(acc.data(), out.data());
    CHECK(same_bits(out, f.output));
    // Output tolerance against exact arithmetic over all tiles, in model space
    // (for rotated codecs the accumulator itself is in the rotated space). A
    // rotation mixes channels, so its rounding is bounded by the whole output's
    // magnitude rather than one channel's.
    std::vector<double> exact(dim, 0.0), mag(dim, 0.0);
    double total_mag = 0;
    for (const auto& tile : f.tiles)
      for (std::size_t k = 0; k < g; ++k)
        for (std::size_t ch = 0; ch < dim; ++ch) {
          exact[ch] += double(tile.weights[k]) * tile.decoded[k * dim + ch];
          mag[ch] += std::abs(double(tile.weights[k]) * tile.decoded[k * dim + ch]);
        }
    for (double m : mag) total_mag = std::max(total_mag, m);
    for (std::size_t ch = 0; ch < dim; ++ch)
      REQUIRE(std::abs(f.output[ch] - exact[ch]) <= 1e-5 * mag[ch] + 1e-6 * total_mag + 1e-30);
  }
  CHECK(files >= 2 * kvq::codec_table().size());
}

TEST_CASE("vectors: the parser refuses damaged files", "[reliability][vectors]") {
  std::istringstream truncated("format kvq-vectors 1\ncodec q8_0\ntile 0\ninput 2\n3f800000\n");
  CHECK_THROWS(parse(truncated));
  std::istringstream bad_token("format kvq-vectors 1\ntile 0\nbytes 2\n0g0 11\nend\n");
  CHECK_THROWS(parse(bad_token));
  std::istringstream ok("format kvq-vectors 1\nquery 1\n3f800000\ntile 0\nbytes 1\nab\nend\n");
  const VectorFile f = parse(ok);
  CHECK(f.header.at("format_version") == "1");
  REQUIRE(f.query.size() == 1);
  REQUIRE(f.tiles.size() == 1);
  CHECK(f.query[0] == 1.0f);
  CHECK(f.tiles.at(0).bytes.at(0) == std::byte{0xAB});
}

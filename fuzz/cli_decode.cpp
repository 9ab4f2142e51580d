// Fuzz target: the `kvq encode` / `kvq decode` commands on arbitrary arguments
// and arbitrary byte streams, through the tool's own code.
//
// The tool's command file is compiled into this target (tools/kvq/cmd_encode.cpp
// registers `encode` and `decode` in the command registry), so what is fuzzed
// is exactly what `kvq decode` runs: argument parsing (kvq::cli::Args),
// codec_from (make_codec with the --codec/--dim strings), the whole-tile
// checks and the decode loop. Input: one argument line, '\n', then the bytes
// the command reads as stdin (via fmemopen); stdout goes to /dev/null.
// Oracle: the command returns or throws kvq::Error (what the tool prints as a
// one-line error); any other exception, crash or sanitizer report is a bug.
// Arguments asking for --dim above 4096 are skipped: there the tool would
// allocate what the user asked for, which is not a robustness finding.
#include "../tools/kvq/cmd_encode.cpp"

#include "fuzz_support.hpp"

#include <exception>
#include <sstream>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static std::FILE* devnull = std::fopen("/dev/null", "wb");
  const auto* nl = static_cast<const std::uint8_t*>(std::memchr(data, '\n', std::min<std::size_t>(size, 256)));
  if (!nl) return 0;
  std::vector<std::string> words;
  {
    std::istringstream line(std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(nl - data)));
    for (std::string w; line >> w;) words.push_back(w);
  }
  if (words.empty()) return 0;
  auto& commands = kvq::cli::registry();
  const auto it = commands.find(words[0]);
  if (it == commands.end()) return 0;
  std::vector<char*> argv;
  for (std::size_t i = 1; i < words.size(); ++i) argv.push_back(words[i].data());
  const kvq::cli::Args args(static_cast<int>(argv.size()), argv.data());
  if (args.has("dim")) {
    const long long dim = std::strtoll(args.get("dim").c_str(), nullptr, 10);
    if (dim > 4096) return 0;
  }

  const std::size_t payload = size - static_cast<std::size_t>(nl + 1 - data);
  // fmemopen refuses a zero-length buffer: an empty stdin is /dev/null.
  std::FILE* in = payload > 0 ? fmemopen(const_cast<std::uint8_t*>(nl + 1), payload, "rb") : std::fopen("/dev/null", "rb");
  if (!in || !devnull) kvq::fuzz::bug("cannot set up stdin/stdout");
  std::FILE* saved_in = stdin;
  std::FILE* saved_out = stdout;
  stdin = in;
  stdout = devnull;
  try {
    it->second.run(args);
  } catch (const kvq::Error&) {
    // The tool's documented failure: one line on stderr, status 1.
  } catch (const std::exception& e) {
    stdin = saved_in;
    stdout = saved_out;
    kvq::fuzz::bug(std::string("kvq ") + words[0] + " threw a non-kvq exception: " + e.what());
  }
  stdin = saved_in;
  stdout = saved_out;
  std::fclose(in);
  return 0;
}

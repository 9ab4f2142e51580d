// kvq: command-line front end. Every failure is one line on stderr and a non-zero status.
#include "cli.hpp"

#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  auto& commands = kvq::cli::registry();
  const std::string name = argc > 1 ? argv[1] : "";
  auto it = commands.find(name);
  if (name.empty() || name == "help" || name == "--help") {
    std::printf("usage: kvq <command> [options]\ncommands:\n");
    for (const auto& [cmd, entry] : commands) std::printf("  %-10s %s\n", cmd.c_str(), entry.help.c_str());
    return 0;
  }
  if (it == commands.end()) {
    std::string known;
    for (const auto& [cmd, entry] : commands) known += (known.empty() ? "" : ", ") + cmd;
    std::fprintf(stderr, "kvq: unknown command '%s' (commands: %s; see kvq help)\n", name.c_str(), known.c_str());
    return 2;
  }
  for (int i = 2; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::printf("usage: kvq %s [options]\n  %s\n", name.c_str(), it->second.help.c_str());
      return 0;
    }
  try {
    return it->second.run(kvq::cli::Args(argc - 2, argv + 2));
  } catch (const kvq::Error& e) {
    std::fprintf(stderr, "kvq %s: %s\n", name.c_str(), e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvq %s: %s\n", name.c_str(), e.what());
  }
  return 1;
}

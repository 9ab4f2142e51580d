// Shared plumbing of the `kvq` tool: a subcommand registry and argument parsing.
// A subcommand lives in its own cmd_<name>.cpp and registers itself with
// `static const kvq::cli::Command reg{"name", "one-line help", run};`.
#pragma once

#include <kvq/core/error.hpp>

#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace kvq::cli {

// Parsed "--key value" / "--flag" options plus positional arguments.
class Args {
 public:
  Args(int argc, char** argv) {
    for (int i = 0; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) == 0) {
        std::string key = a.substr(2), value;
        if (auto eq = key.find('='); eq != std::string::npos) {
          value = key.substr(eq + 1);
          key = key.substr(0, eq);
        } else if (i + 1 < argc && std::string_view(argv[i + 1]).rfind("--", 0) != 0) {
          value = argv[++i];
        }
        options_[key] = value;
      } else {
        positional_.push_back(a);
      }
    }
  }
  bool has(const std::string& key) const { return options_.count(key) != 0; }
  std::string get(const std::string& key, const std::string& fallback = "") const {
    auto it = options_.find(key);
    return it == options_.end() ? fallback : it->second;
  }
  std::string require(const std::string& key) const {
    auto it = options_.find(key);
    detail::require(it != options_.end() && !it->second.empty(), Errc::invalid_argument,
                    "missing required option --" + key);
    return it->second;
  }
  long long get_int(const std::string& key, long long fallback) const {
    if (!has(key)) return fallback;
    return parse_int(key, get(key));
  }
  long long require_int(const std::string& key) const { return parse_int(key, require(key)); }
  double get_double(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const std::string v = get(key);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    detail::require(!v.empty() && end && *end == '\0', Errc::invalid_argument,
                    "--" + key + " expects a number, got '" + v + "'");
    return x;
  }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  static long long parse_int(const std::string& key, const std::string& v) {
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    detail::require(!v.empty() && end && *end == '\0', Errc::invalid_argument,
                    "--" + key + " expects an integer, got '" + v + "'");
    return x;
  }
  std::map<std::string, std::string> options_;
  std::vector<std::string> positional_;
};

using Run = std::function<int(const Args&)>;

struct Entry {
  std::string help;
  Run run;
};

inline std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> commands;
  return commands;
}

struct Command {
  Command(const std::string& name, const std::string& help, Run run) {
    registry()[name] = Entry{help, std::move(run)};
  }
};

}  // namespace kvq::cli

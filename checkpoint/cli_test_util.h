// Runs `shoalctl checkpoint ...` in-process for the tests of the checkpoint commands.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/commands.h"

namespace shoal::testing {

struct CliResult {
  int code;
  std::string out, err;
};

// Parses `args` (without "shoalctl") with the checkpoint commands registered; a parse
// error gives CLI11's exit code and message, as shoalctl's main does.
inline CliResult RunCheckpointCli(std::vector<std::string> args) {
  CLI::App app("shoalctl");
  int code = -1;
  std::ostringstream out, err;
  RegisterCheckpointCommands(app, &code, out, err);
  args.insert(args.begin(), "shoalctl");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    code = app.exit(e, out, err);
  }
  return {code, out.str(), err.str()};
}

}  // namespace shoal::testing

// shoal-data: the `data` commands as a standalone tool, for use before shoalctl mounts
// them and for the benchmarks' scripts. Same flags as `shoalctl data ...`.
#include <CLI/CLI.hpp>

#include "datapipe/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Shoal dataset tools: ingest, scan, quarantine, verify"};
  int exit_code = 0;
  shoal::RegisterDataCommands(app, &exit_code);
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}

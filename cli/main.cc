// shoalctl: the user's tool for Shoal. `shoalctl --help` lists the commands.
#include <CLI/CLI.hpp>

#include "checkpoint/commands.h"
#include "cli/commands.h"
#include "common/log.h"
#include "datapipe/commands.h"
#include "shoal/config.h"

int main(int argc, char** argv) {
  CLI::App app{"shoalctl " SHOAL_VERSION ": run, submit and watch Shoal data-parallel training jobs"};
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 success, 1 job failed or runtime error, 2 bad input, 3 coordinator unreachable, 130 interrupted.\n"
      "Quick start: shoalctl run examples/fashion-mnist.yaml");
  app.set_version_flag("--version", SHOAL_VERSION);
  // Before any command: library warnings must go to stderr, never into --json on stdout.
  shoal::InitLogging("shoalctl");
  int exit_code = shoal::kExitOk;
  shoal::RegisterRunCommand(app, &exit_code);
  shoal::RegisterClusterCommands(app, &exit_code);
  shoal::RegisterElasticCommands(app, &exit_code);
  shoal::RegisterAuthCommands(app, &exit_code);
  shoal::RegisterLineageCommands(app, &exit_code);
  shoal::RegisterUsageCommand(app, &exit_code);
  shoal::RegisterTraceCommand(app, &exit_code);
  shoal::RegisterValidateCommand(app, &exit_code);
  shoal::RegisterCheckpointCommands(app, &exit_code, std::cout, std::cerr, shoal::CheckpointDirOfJob,
                                   shoal::LineageMetadataForExport);
  shoal::RegisterDataCommands(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : shoal::kExitBadInput;
  }
  return exit_code;
}

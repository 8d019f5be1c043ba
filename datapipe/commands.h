// `shoalctl data ...`: ingest, scan, quarantine and verify, as CLI11 subcommands that
// shoalctl (or any other front end) mounts with one call. Output goes to stdout (JSON
// with --json), progress and errors to stderr; *exit_code reports the outcome.
#pragma once

#include <CLI/CLI.hpp>

namespace shoal {

// Adds the `data` subcommand tree to `app`. When a data command runs, *exit_code is set
// to 0 on success, 1 when the operation failed (the reason is printed to stderr).
void RegisterDataCommands(CLI::App& app, int* exit_code);

}  // namespace shoal

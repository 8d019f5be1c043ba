// shoalctl's subcommands. Each Register* adds its subcommand to the app; the chosen
// command stores its process exit code in *exit_code.
//   0 success · 1 the job failed or a runtime error · 2 bad input (spec, arguments)
//   3 coordinator unreachable · 130 interrupted
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <string>

#include "common/status.h"

namespace shoal {

constexpr int kExitOk = 0, kExitFailed = 1, kExitBadInput = 2, kExitUnreachable = 3, kExitInterrupted = 130;

void RegisterRunCommand(CLI::App& app, int* exit_code);
void RegisterClusterCommands(CLI::App& app, int* exit_code);  // submit, status, cancel
void RegisterValidateCommand(CLI::App& app, int* exit_code);
void RegisterElasticCommands(CLI::App& app, int* exit_code);  // ledger, events, scale
void RegisterAuthCommands(CLI::App& app, int* exit_code);     // auth init|keygen|add|list|revoke, audit
void RegisterLineageCommands(CLI::App& app, int* exit_code);  // lineage show|verify
void RegisterUsageCommand(CLI::App& app, int* exit_code);     // usage --by team|project
void RegisterTraceCommand(CLI::App& app, int* exit_code);     // trace: merge a job's timeline trace

// The lineage's answers for `checkpoint export`'s safetensors metadata (lineage_commands.cc).
std::map<std::string, std::string> LineageMetadataForExport(const std::string& job, const std::string& manifest_digest,
                                                            const std::string& coordinator);

// --since for audit and usage: "2026-12-07T10:00", "2026-12-07 10:00:00" (local time),
// a unix time in ms, or "-1h" / "-30m" / "-7d" before now; "" is 0 (everything).
StatusOr<int64_t> ParseSinceTime(const std::string& since);
// Maps a Status to shoalctl's exit codes and prints it to stderr.
int ReportError(const Status& status);
// The coordinator to talk to: --coordinator, else $SHOAL_COORDINATOR, else the
// endpoint a `shoalctl run` in this directory wrote to .shoal/endpoint, else :7400.
std::string DefaultCoordinator();
// The store to read without a coordinator: `state_dir` when given, else a stopped
// `shoalctl run`'s .shoal/coordinator when no coordinator is named anywhere (no
// --coordinator, no $SHOAL_COORDINATOR, no running run's .shoal/endpoint); "" : ask the
// coordinator. For the commands that read what a finished run left (lineage, usage).
std::string StoppedRunStateDir(const std::string& coordinator, const std::string& state_dir);
// The checkpoint job directory of `job`, from the coordinator's registry (its latest
// committed checkpoint's parent directory); for `checkpoint list JOB`.
StatusOr<std::string> CheckpointDirOfJob(const std::string& job, const std::string& coordinator);

}  // namespace shoal

// shoalctl subcommands for keys and checkpoints: `keygen`, `checkpoint verify|list|export`.
// Each command stores its exit code in *exit_code instead of exiting, so main can return
// it and tests can run the commands in-process with an argv.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <map>
#include <iostream>
#include <string>

#include "common/status.h"

namespace shoal {

// Adds to `app`:
//   keygen --out DIR [--name NAME]
//       writes DIR/NAME.key (PEM PKCS#8, mode 0600) and DIR/NAME.pub (PEM
//       SubjectPublicKeyInfo), readable by openssl (NAME defaults to "shoal").
//   checkpoint verify PATH [--trust PUB]... [--allow-unsigned] [--allow-rollback] [--json]
//       exit 0 valid, 1 invalid (also a renamed or substituted checkpoint, and a job
//       directory whose `latest` was turned back: see LoadOptions). JSON: {valid, path,
//       dir, step, signer, signed, shards, bytes, manifest_digest, rollback_warning, error}.
//   checkpoint list JOB|DIR/JOB [--coordinator ADDR] [--trust PUB]... [--allow-unsigned] [--json]
//       one line per committed step: size, signer, verified or why not, which is latest
//       (and whether it was turned back: a newer step verifies);
//       exit 0 when every checkpoint verifies. A JOB id (not an existing directory) is
//       looked up in the coordinator's checkpoint registry through `resolve_job`
//       (exit 3 when the coordinator cannot be reached, 2 when it has no checkpoint).
//   checkpoint export PATH --safetensors OUT [--include-optimizer] [--trust PUB]...
//       [--allow-unsigned] [--allow-rollback]
// PATH is a step directory or a job directory (then `latest` is followed). Exit code 2
// means the command could not run (e.g. an unreadable --trust key file).
// Usage: int code = 0; RegisterCheckpointCommands(app, &code); CLI11_PARSE(app, argc, argv);
//        return code;
// `exit_code` must outlive app.parse; `out` and `err` receive the command's output.
// Finds the checkpoint job directory of a job id (shoalctl asks the coordinator's
// registry); the second argument is --coordinator ("" for the default).
using JobDirResolver = std::function<StatusOr<std::string>(const std::string& job, const std::string& coordinator)>;

// The lineage's answers for an exported checkpoint (shoalctl asks the coordinator, or
// reads a stopped one's store), added to the safetensors __metadata__.
using LineageMetadataFn = std::function<std::map<std::string, std::string>(
    const std::string& job, const std::string& manifest_digest, const std::string& coordinator)>;

void RegisterCheckpointCommands(CLI::App& app, int* exit_code, std::ostream& out = std::cout,
                                std::ostream& err = std::cerr, JobDirResolver resolve_job = nullptr,
                                LineageMetadataFn lineage = nullptr);

}  // namespace shoal

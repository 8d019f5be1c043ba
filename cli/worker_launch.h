// How `shoalctl run` starts its workers: N child processes of shoal-worker, or, for the
// MPI backend (which needs its ranks started by a launcher), one mpirun that starts N.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/status.h"

namespace shoal {

struct WorkerLaunch {
  std::string backend;   // the spec's collectives.backend
  int workers = 1;
  std::string endpoint;  // the coordinator's
  std::string job_id;
  int blas_threads = 1;  // per worker
};

struct LaunchedProcess {
  pid_t pid = -1;
  std::string what;  // for messages: "worker 1" or "mpirun"
};

// The worker binary: $SHOAL_WORKER, else shoal-worker next to this executable, else
// shoal-worker from PATH.
std::string WorkerBinary();

// The launcher for backend "mpi": $SHOAL_MPIRUN, else the mpiexec found at build time,
// else mpirun from PATH.
std::string MpirunBinary();

// The argv of the one mpirun that starts `launch.workers` ranks of `worker`: root needs
// --allow-run-as-root, more ranks than cores --oversubscribe; --bind-to none leaves each
// rank's training and communication threads to the scheduler, as child processes are.
std::vector<std::string> MpirunArgv(const WorkerLaunch& launch, const std::string& mpirun, const std::string& worker,
                                    bool as_root, int cores);

// Starts the workers. If a fork fails, the processes already started are killed and
// reaped before the error returns. A binary that cannot be executed shows as a process
// exiting with code 127 (its message on stderr).
StatusOr<std::vector<LaunchedProcess>> LaunchWorkers(const WorkerLaunch& launch);

}  // namespace shoal

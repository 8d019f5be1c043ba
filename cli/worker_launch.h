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
  // Added to each worker's environment ("NAME=value"): its control-plane keys
  // (SHOAL_KEY, SHOAL_COORDINATOR_KEY). mpirun passes them on with -x.
  std::vector<std::string> env;
  // Each process's stdout and stderr go to a pipe of its own (LaunchedProcess::output)
  // instead of this process's, so that one writer (cli/console.h) prints them whole.
  bool capture_output = false;
};

struct LaunchedProcess {
  pid_t pid = -1;
  std::string what;  // for messages: "worker 1" or "mpirun"
  int output = -1;   // read end of its stdout+stderr pipe (capture_output), else -1
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

// The path execve is given for `name`: `name` itself if it contains a '/', else the
// first regular, executable file `dir/name` for dir in `path_env` (colon-separated,
// an empty entry is the current directory; null: "/bin:/usr/bin", as execvp does).
// Empty if there is none.
std::string ResolveExecutable(const std::string& name, const char* path_env);

// The environment a launched process gets: `env` (an environ-style array, null-
// terminated) without the variables of an outer launcher (OMPI_COMM_WORLD_SIZE,
// OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_RANK, PMIX_RANK, SLURM_NTASKS,
// SLURM_PROCID), so that a worker started here never takes an outer mpirun's rank.
std::vector<std::string> WorkerEnvironment(const char* const* env);

// Forks and execs `argv` (argv[0] resolved by ResolveExecutable with $PATH) with
// WorkerEnvironment(environ), in a process group of its own and with SIGTERM sent to
// it if this process dies. Safe in a multithreaded process: the child makes only
// async-signal-safe calls. Returns the pid, or -1 with errno set if fork failed. A
// binary that cannot be found or executed shows as the child exiting with 127 after
// a one-line message on stderr.
// `output_fd` >= 0 becomes the child's stdout and stderr.
pid_t SpawnProcess(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env = {},
                   int output_fd = -1);

// Starts the workers. If a fork fails, the processes already started are killed and
// reaped (their pipes closed) before the error returns. A binary that cannot be executed shows as a process
// exiting with code 127 (its message on stderr).
StatusOr<std::vector<LaunchedProcess>> LaunchWorkers(const WorkerLaunch& launch);

}  // namespace shoal

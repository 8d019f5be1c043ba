#include "cli/worker_launch.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace shoal {

namespace {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// Forks and execs argv (argv[0] a path, or a name looked up in PATH). The child forgets
// any outer launcher, so that a worker started here never takes an outer mpirun's rank.
// It gets a process group of its own: Ctrl-C at the terminal then reaches shoalctl
// alone, which cancels the job so that every worker stops at the same step (a worker
// signalled directly would stop on its own and fail the job). And it is sent SIGTERM
// if shoalctl dies, so that no worker outlives the run that started it.
pid_t Spawn(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(143);  // shoalctl died before prctl took effect
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_RANK",
                          "SLURM_NTASKS", "SLURM_PROCID"})
      ::unsetenv(v);
    ::execvp(args[0], args.data());  // a name with a '/' is taken as a path
    std::fprintf(stderr, "shoalctl: cannot start %s: %s\n", argv[0].c_str(), std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

}  // namespace

std::string WorkerBinary() {
  if (std::string v = EnvOr("SHOAL_WORKER", ""); !v.empty()) return v;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto candidate = self.parent_path() / "shoal-worker";
    if (std::filesystem::exists(candidate)) return candidate.string();
  }
  return "shoal-worker";  // from PATH
}

std::string MpirunBinary() {
#ifdef SHOAL_MPIEXEC
  return EnvOr("SHOAL_MPIRUN", SHOAL_MPIEXEC);
#else
  return EnvOr("SHOAL_MPIRUN", "mpirun");
#endif
}

std::vector<std::string> MpirunArgv(const WorkerLaunch& launch, const std::string& mpirun, const std::string& worker,
                                    bool as_root, int cores) {
  std::vector<std::string> argv = {mpirun};
  if (as_root) argv.push_back("--allow-run-as-root");
  if (launch.workers > cores) argv.push_back("--oversubscribe");
  for (const char* a : {"--bind-to", "none", "-np"}) argv.push_back(a);
  argv.push_back(std::to_string(launch.workers));
  for (const std::string& a : {worker, std::string("--coordinator"), launch.endpoint, std::string("--job"), launch.job_id,
                               std::string("--blas-threads"), std::to_string(launch.blas_threads)})
    argv.push_back(a);
  return argv;
}

StatusOr<std::vector<LaunchedProcess>> LaunchWorkers(const WorkerLaunch& launch) {
  const std::string worker = WorkerBinary();
  std::vector<LaunchedProcess> started;
  auto fail = [&started](const std::string& what) {
    const std::string why = std::strerror(errno);
    for (const LaunchedProcess& p : started) {
      ::kill(p.pid, SIGKILL);
      ::waitpid(p.pid, nullptr, 0);
    }
    return Internal("cannot start " + what + ": fork failed: " + why);
  };
  if (launch.backend == "mpi") {
    const int cores = static_cast<int>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
    const auto argv = MpirunArgv(launch, MpirunBinary(), worker, ::geteuid() == 0, cores);
    pid_t pid = Spawn(argv);
    if (pid < 0) return fail("mpirun");
    started.push_back({pid, "mpirun (" + std::to_string(launch.workers) + " workers)"});
    return started;
  }
  const std::vector<std::string> argv = {worker, "--coordinator", launch.endpoint, "--job", launch.job_id,
                                         "--blas-threads", std::to_string(launch.blas_threads)};
  for (int i = 0; i < launch.workers; ++i) {
    pid_t pid = Spawn(argv);
    if (pid < 0) return fail("worker " + std::to_string(i));
    started.push_back({pid, "worker " + std::to_string(i)});
  }
  return started;
}

}  // namespace shoal

#include "cli/worker_launch.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>

namespace shoal {

namespace {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// Variables of an outer launcher (mpirun, srun) that the child must not inherit, so
// that a worker started here never takes an outer mpirun's rank.
constexpr const char* kLauncherVariables[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                                              "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_RANK",
                                              "SLURM_NTASKS", "SLURM_PROCID"};

// Writes a NUL-terminated string with write(2) (async-signal-safe), ignoring errors:
// there is nowhere to report them.
void WriteAll(int fd, const char* s) {
  size_t left = std::strlen(s);  // strlen is async-signal-safe since POSIX.1-2016
  while (left > 0) {
    const ssize_t n = ::write(fd, s, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    s += n;
    left -= static_cast<size_t>(n);
  }
}

// strerror is not async-signal-safe; the usual reasons an exec fails, as literals.
const char* ExecErrorText(int err) {
  switch (err) {
    case ENOENT: return "no such file";
    case EACCES: return "permission denied";
    case ENOEXEC: return "not an executable format";
    case ENOTDIR: return "a path component is not a directory";
    case ENOMEM: return "out of memory";
    case E2BIG: return "argument list too long";
    case ELOOP: return "too many symbolic links";
    case ETXTBSY: return "text file busy";
    default: return "exec failed";
  }
}

}  // namespace

std::string ResolveExecutable(const std::string& name, const char* path_env) {
  if (name.empty()) return "";
  if (name.find('/') != std::string::npos) return name;
  // execvp's default search path when PATH is unset.
  const std::string path = path_env ? path_env : "/bin:/usr/bin";
  size_t begin = 0;
  for (;;) {
    const size_t end = std::min(path.find(':', begin), path.size());
    // An empty entry means the current directory.
    const std::string dir = end > begin ? path.substr(begin, end - begin) : std::string(".");
    const std::string candidate = dir + "/" + name;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::faccessat(AT_FDCWD, candidate.c_str(), X_OK, AT_EACCESS) == 0)
      return candidate;
    if (end == path.size()) return "";
    begin = end + 1;
  }
}

std::vector<std::string> WorkerEnvironment(const char* const* env) {
  std::vector<std::string> out;
  for (; env && *env; ++env) {
    const std::string_view entry(*env);
    const std::string_view name = entry.substr(0, entry.find('='));
    if (std::none_of(std::begin(kLauncherVariables), std::end(kLauncherVariables),
                     [&](const char* v) { return name == v; }))
      out.emplace_back(entry);
  }
  return out;
}

// Forks and execs argv (argv[0] a path, or a name looked up in PATH), with the
// environment of WorkerEnvironment. The parent may have other threads, so everything
// the child needs (argv, environment, the resolved path, the failure messages) is
// built before fork and the child makes only async-signal-safe calls: another thread
// may have held the allocator's or stdio's lock at the moment of the fork.
// The child gets a process group of its own: Ctrl-C at the terminal then reaches
// shoalctl alone, which cancels the job so that every worker stops at the same step (a
// worker signalled directly would stop on its own and fail the job). And it is sent
// SIGTERM if shoalctl dies, so that no worker outlives the run that started it.
pid_t SpawnProcess(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env, int output_fd) {
  if (argv.empty()) {
    errno = EINVAL;
    return -1;
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_strings = WorkerEnvironment(environ);
  for (const std::string& e : extra_env) {
    const std::string name = e.substr(0, e.find('=') + 1);
    std::erase_if(env_strings, [&](const std::string& have) { return have.rfind(name, 0) == 0; });
    env_strings.push_back(e);
  }
  std::vector<char*> env;
  for (const auto& e : env_strings) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  const std::string path = ResolveExecutable(argv[0], std::getenv("PATH"));
  const std::string not_found = "shoalctl: cannot start " + argv[0] + ": not found in PATH\n";
  const std::string cannot_exec = "shoalctl: cannot start " + argv[0] + ": ";
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (output_fd >= 0) {
      // dup2 clears close-on-exec on the copies; the original closes at exec.
      ::dup2(output_fd, STDOUT_FILENO);
      ::dup2(output_fd, STDERR_FILENO);
    }
    if (::getppid() != parent) ::_exit(143);  // shoalctl died before prctl took effect
    if (path.empty()) {
      WriteAll(STDERR_FILENO, not_found.c_str());
      ::_exit(127);
    }
    ::execve(path.c_str(), args.data(), env.data());
    const int err = errno;
    WriteAll(STDERR_FILENO, cannot_exec.c_str());
    WriteAll(STDERR_FILENO, ExecErrorText(err));
    WriteAll(STDERR_FILENO, "\n");
    ::_exit(127);
  }
  return pid;
}

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
  for (const char* a : {"--bind-to", "none"}) argv.push_back(a);
  for (const std::string& e : launch.env) {
    argv.push_back("-x");
    argv.push_back(e.substr(0, e.find('=')));
  }
  argv.push_back("-np");
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
      if (p.output >= 0) ::close(p.output);
    }
    return Internal("cannot start " + what + ": " + why);
  };
  // Forks one process, its output into a fresh pipe when asked; -1 (errno set) on failure.
  auto spawn = [&launch](const std::vector<std::string>& argv, int* read_end) -> pid_t {
    *read_end = -1;
    if (!launch.capture_output) return SpawnProcess(argv, launch.env);
    int fds[2];
    // Close-on-exec, so that no other child keeps this pipe open past its process's end.
    if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
    const pid_t pid = SpawnProcess(argv, launch.env, fds[1]);
    const int saved = errno;
    ::close(fds[1]);
    if (pid < 0) {
      ::close(fds[0]);
      errno = saved;
      return -1;
    }
    *read_end = fds[0];
    return pid;
  };
  if (launch.backend == "mpi") {
    const int cores = static_cast<int>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
    const auto argv = MpirunArgv(launch, MpirunBinary(), worker, ::geteuid() == 0, cores);
    int output = -1;
    pid_t pid = spawn(argv, &output);
    if (pid < 0) return fail("mpirun");
    started.push_back({pid, "mpirun (" + std::to_string(launch.workers) + " workers)", output});
    return started;
  }
  const std::vector<std::string> argv = {worker, "--coordinator", launch.endpoint, "--job", launch.job_id,
                                         "--blas-threads", std::to_string(launch.blas_threads)};
  for (int i = 0; i < launch.workers; ++i) {
    int output = -1;
    pid_t pid = spawn(argv, &output);
    if (pid < 0) return fail("worker " + std::to_string(i));
    started.push_back({pid, "worker " + std::to_string(i), output});
  }
  return started;
}

}  // namespace shoal

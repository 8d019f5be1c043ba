// The launcher's command lines and binaries; tests/e2e_test.cc runs them for real.
#include "cli/worker_launch.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace shoal {
namespace {

TEST(WorkerLaunch, MpirunArgvStartsEveryWorkerRank) {
  WorkerLaunch l{"mpi", 3, "tcp://127.0.0.1:7400", "job-1", 2};
  EXPECT_EQ(MpirunArgv(l, "/usr/bin/mpiexec", "/opt/shoal-worker", /*as_root=*/false, /*cores=*/4),
            (std::vector<std::string>{"/usr/bin/mpiexec", "--bind-to", "none", "-np", "3", "/opt/shoal-worker",
                                      "--coordinator", "tcp://127.0.0.1:7400", "--job", "job-1", "--blas-threads", "2"}));
  // As root, with more ranks than cores: the two flags Open MPI asks for.
  auto root = MpirunArgv(l, "mpirun", "w", /*as_root=*/true, /*cores=*/2);
  ASSERT_GE(root.size(), 3u);
  EXPECT_EQ(root[1], "--allow-run-as-root");
  EXPECT_EQ(root[2], "--oversubscribe");
}

TEST(WorkerLaunch, EnvironmentChoosesTheBinaries) {
  ::setenv("SHOAL_WORKER", "/somewhere/else/shoal-worker", 1);
  ::setenv("SHOAL_MPIRUN", "/opt/mpi/bin/mpirun", 1);
  EXPECT_EQ(WorkerBinary(), "/somewhere/else/shoal-worker");
  EXPECT_EQ(MpirunBinary(), "/opt/mpi/bin/mpirun");
  ::unsetenv("SHOAL_WORKER");
  ::unsetenv("SHOAL_MPIRUN");
  EXPECT_NE(WorkerBinary(), "/somewhere/else/shoal-worker");
  EXPECT_NE(MpirunBinary(), "/opt/mpi/bin/mpirun");
}

TEST(WorkerLaunch, EnvironmentDropsOuterLauncherVariablesOnly) {
  const char* env[] = {"PATH=/usr/bin", "OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=4",
                       "OMPI_COMM_WORLD_LOCAL_RANK=1", "PMIX_RANK=1", "SLURM_NTASKS=4", "SLURM_PROCID=1",
                       "OMPI_COMM_WORLD_RANKX=kept", "SLURM_JOB_ID=7", "EMPTY=", "NOEQUALS", nullptr};
  EXPECT_EQ(WorkerEnvironment(env),
            (std::vector<std::string>{"PATH=/usr/bin", "OMPI_COMM_WORLD_RANKX=kept", "SLURM_JOB_ID=7", "EMPTY=",
                                      "NOEQUALS"}));
  EXPECT_TRUE(WorkerEnvironment(nullptr).empty());
}

TEST(WorkerLaunch, ResolvesNamesInPathLikeExecvp) {
  EXPECT_EQ(ResolveExecutable("sh", "/nonexistent/dir:/bin:/usr/bin"), "/bin/sh");
  EXPECT_EQ(ResolveExecutable("sh", nullptr), "/bin/sh");  // execvp's default path
  EXPECT_EQ(ResolveExecutable("./relative/worker", "/bin"), "./relative/worker");  // a '/': a path
  EXPECT_EQ(ResolveExecutable("/abs/worker", "/bin"), "/abs/worker");
  EXPECT_EQ(ResolveExecutable("shoal-no-such-binary", "/bin:/usr/bin"), "");
  EXPECT_EQ(ResolveExecutable("sh", "/etc"), "");  // /etc/sh does not exist
  EXPECT_EQ(ResolveExecutable("", "/bin"), "");
}

// Runs argv through SpawnProcess and returns its exit code (-1 if it did not exit).
int SpawnAndWait(const std::vector<std::string>& argv) {
  const pid_t pid = SpawnProcess(argv);
  EXPECT_GT(pid, 0);
  if (pid <= 0) return -1;
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(WorkerLaunch, ChildDoesNotSeeTheOuterLaunchersRank) {
  ::setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  ::setenv("SLURM_PROCID", "3", 1);
  ::setenv("SHOAL_LAUNCH_TEST_KEPT", "yes", 1);
  // "sh" without a '/': also resolved through PATH before the fork.
  const int code = SpawnAndWait({"sh", "-c",
                                 "test -z \"$OMPI_COMM_WORLD_RANK\" && test -z \"$SLURM_PROCID\" && "
                                 "test \"$SHOAL_LAUNCH_TEST_KEPT\" = yes"});
  ::unsetenv("OMPI_COMM_WORLD_RANK");
  ::unsetenv("SLURM_PROCID");
  ::unsetenv("SHOAL_LAUNCH_TEST_KEPT");
  EXPECT_EQ(code, 0);
  // The parent's own environment is untouched.
  ::setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  SpawnAndWait({"/bin/true"});
  EXPECT_STREQ(::getenv("OMPI_COMM_WORLD_RANK"), "3");
  ::unsetenv("OMPI_COMM_WORLD_RANK");
}

TEST(WorkerLaunch, UnexecutableBinaryExitsWith127) {
  EXPECT_EQ(SpawnAndWait({"shoal-no-such-binary", "--flag"}), 127);  // not in PATH
  EXPECT_EQ(SpawnAndWait({"/nonexistent/shoal-worker"}), 127);      // execve fails
  char plain[] = "/tmp/shoal-launch-plain-XXXXXX";  // mode 0600: not executable
  const int fd = ::mkstemp(plain);
  ASSERT_GE(fd, 0);
  ::close(fd);
  EXPECT_EQ(SpawnAndWait({plain}), 127);
  ::unlink(plain);
  EXPECT_EQ(SpawnAndWait({"/bin/sh", "-c", "exit 5"}), 5);
}

TEST(WorkerLaunch, LaunchedWorkersGetTheFilteredEnvironment) {
  // The public entry point: SHOAL_WORKER names the binary, here a shell script that
  // fails if it sees the outer launcher's rank.
  char dir[] = "/tmp/shoal-launch-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string script = std::string(dir) + "/worker.sh";
  FILE* f = std::fopen(script.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("#!/bin/sh\ntest -z \"$OMPI_COMM_WORLD_RANK\" && test -z \"$PMIX_RANK\"\n", f);
  std::fclose(f);
  ASSERT_EQ(::chmod(script.c_str(), 0755), 0);
  ::setenv("SHOAL_WORKER", script.c_str(), 1);
  ::setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  ::setenv("PMIX_RANK", "1", 1);
  auto procs = LaunchWorkers(WorkerLaunch{"gloo", 2, "tcp://127.0.0.1:1", "job-1", 1});
  ::unsetenv("SHOAL_WORKER");
  ::unsetenv("OMPI_COMM_WORLD_RANK");
  ::unsetenv("PMIX_RANK");
  ASSERT_TRUE(procs.ok()) << procs.status().ToString();
  ASSERT_EQ(procs->size(), 2u);
  for (const LaunchedProcess& p : *procs) {
    int status = 0;
    ASSERT_EQ(::waitpid(p.pid, &status, 0), p.pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << p.what << " status " << status;
  }
  ::unlink(script.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace shoal

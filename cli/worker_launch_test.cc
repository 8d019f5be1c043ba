// The launcher's command lines and binaries; tests/e2e_test.cc runs them for real.
#include "cli/worker_launch.h"

#include <gtest/gtest.h>
#include <stdlib.h>

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

}  // namespace
}  // namespace shoal

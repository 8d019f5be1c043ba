// MemoryKvStore (waits, timeouts naming the key) and the backend factory
// (resolution, enabled checks, the nccl placeholder).
#include "collectives/memory_kv_store.h"
#include "shoal/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <thread>

#include "collectives/factory.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;

TEST(MemoryKvStoreTest, GetWaitsForSet) {
  MemoryKvStore kv;
  std::thread setter([&] {
    std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(kv.Set("a", "1").ok());
  });
  auto v = kv.Get("a", 5s);
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "1");
  ASSERT_TRUE(kv.Set("a", "2").ok());
  EXPECT_EQ(*kv.Get("a", 0ms), "2");
  EXPECT_EQ(kv.size(), 1u);
}

TEST(MemoryKvStoreTest, GetTimesOutNamingTheKey) {
  MemoryKvStore kv;
  const auto start = std::chrono::steady_clock::now();
  auto v = kv.Get("job/7/missing", 100ms);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 100ms);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(v.status().message().find("job/7/missing"), std::string::npos);
}

// Tests run outside mpirun; these set and restore the launcher's variable.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old, had_ = true;
    if (value) setenv(name, value, 1); else unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1); else unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(FactoryTest, ResolvesAutoFromTheLauncher) {
  ScopedEnv ompi("OMPI_COMM_WORLD_SIZE", nullptr), pmi("PMI_RANK", nullptr),
      pmix("PMIX_RANK", nullptr), slurm("SLURM_PROCID", nullptr);
  EXPECT_FALSE(UnderMpiLauncher());
  EXPECT_EQ(ResolveBackend("auto"), "gloo");
  EXPECT_EQ(ResolveBackend("GLOO"), "gloo");
  EXPECT_EQ(ResolveBackend("nccl"), "nccl");
  {
    ScopedEnv under("OMPI_COMM_WORLD_SIZE", "4");
    EXPECT_TRUE(UnderMpiLauncher());
    EXPECT_EQ(ResolveBackend("auto"), "mpi");
  }
  {
    ScopedEnv procid("SLURM_PROCID", "0"), type("SLURM_MPI_TYPE", "none");
    EXPECT_FALSE(UnderMpiLauncher());  // plain srun without an MPI plugin
  }
  {
    ScopedEnv procid("SLURM_PROCID", "0"), type("SLURM_MPI_TYPE", "pmix");
    EXPECT_TRUE(UnderMpiLauncher());
  }
}

TEST(FactoryTest, ReportsWhyABackendCannotBeBuilt) {
  ScopedEnv ompi("OMPI_COMM_WORLD_SIZE", nullptr), pmi("PMI_RANK", nullptr),
      pmix("PMIX_RANK", nullptr), slurm("SLURM_PROCID", nullptr);
  MemoryKvStore kv;
  CommunicatorConfig config;
  config.kv = &kv;
  config.prefix = testing::UniquePrefix("factory");
  config.timeout = 2s;

  config.backend = "nccl";
  auto nccl = MakeCommunicator(config);
#if SHOAL_HAVE_NCCL
  // Built with NCCL: refused only because no GPU is visible (as on the CPU machines).
  if (!nccl.ok()) {
    EXPECT_EQ(nccl.status().code(), StatusCode::kFailedPrecondition) << nccl.status().ToString();
  }
#else
  EXPECT_EQ(nccl.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(nccl.status().message().find("nccl backend not built"), std::string::npos);
#endif

  config.backend = "mpi";
  EXPECT_EQ(MakeCommunicator(config).status().code(), StatusCode::kFailedPrecondition);

  config.backend = "carrier-pigeon";
  auto unknown = MakeCommunicator(config);
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("gloo"), std::string::npos);

  config.backend = "gloo";
  config.rank = 3;
  EXPECT_EQ(MakeCommunicator(config).status().code(), StatusCode::kInvalidArgument);
}

TEST(FactoryTest, AutoBuildsGlooOutsideMpirun) {
  ScopedEnv ompi("OMPI_COMM_WORLD_SIZE", nullptr), pmi("PMI_RANK", nullptr),
      pmix("PMIX_RANK", nullptr), slurm("SLURM_PROCID", nullptr);
  MemoryKvStore kv;
  const std::string prefix = testing::UniquePrefix("factory");
  testing::RunRanks(2, [&](int r) {
    CommunicatorConfig config;
    config.rank = r;
    config.size = 2;
    config.kv = &kv;
    config.prefix = prefix;
    config.timeout = 5s;
    // Each rank on a host of its own: ranks sharing one would get shm (issue 18,
    // hierarchical_communicator_test.cc covers the choice).
    config.host = r == 0 ? "host-a" : "host-b";
    auto comm = MakeCommunicator(config);
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    EXPECT_EQ((*comm)->backend(), "gloo");
    EXPECT_EQ((*comm)->rank(), r);
    EXPECT_TRUE((*comm)->Barrier({}).ok());
  });
}

}  // namespace
}  // namespace shoal

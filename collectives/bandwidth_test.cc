// Bandwidth emulation: the token bucket's lower bound on transfer time (a
// correctness bound, not a performance threshold), the environment parsing, and the
// cap applied end to end by the Gloo backend.
#include "collectives/bandwidth.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include <chrono>
#include <cstdlib>

#include "collectives/factory.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

TEST(TokenBucketTest, TransferTakesAtLeastBytesOverRate) {
  LinkEmulation e;
  e.bandwidth_mbps = 80;  // 10 MB/s
  TokenBucket bucket(e);
  const auto start = Clock::now();
  constexpr size_t kPiece = 64 << 10, kPieces = 16;  // 1 MiB
  for (size_t i = 0; i < kPieces; ++i) bucket.BeforeSend(kPiece);
  // The bucket starts empty, so every byte waits its turn: >= bytes / rate.
  EXPECT_GE(SecondsSince(start), kPiece * kPieces / 10e6);
}

TEST(TokenBucketTest, LatencyIsAddedPerMessage) {
  LinkEmulation e;
  e.latency_us = 3000;
  TokenBucket bucket(e);
  const auto start = Clock::now();
  for (int i = 0; i < 4; ++i) bucket.BeforeSend(10);
  EXPECT_GE(SecondsSince(start), 4 * 3e-3);
}

TEST(TokenBucketTest, AControlFileSlowsTheLinkWhileItExists) {
  const std::string file = ::testing::TempDir() + "/shoal-link-control";
  std::remove(file.c_str());
  LinkEmulation e;
  e.control_file = file;
  ASSERT_TRUE(e.enabled());
  TokenBucket bucket(e);
  constexpr size_t kPiece = 64 << 10;
  // No file: no limit. 64 MiB would take 67 s at the 8 Mbit/s below.
  auto start = Clock::now();
  for (int i = 0; i < 1024; ++i) bucket.BeforeSend(kPiece);
  EXPECT_LT(SecondsSince(start), 30.0);
  {
    std::ofstream(file) << "8 0\n";  // 1 MB/s
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // past the re-read interval
  start = Clock::now();
  for (int i = 0; i < 5; ++i) bucket.BeforeSend(kPiece);  // 320 KiB, 64 KiB of burst
  EXPECT_GE(SecondsSince(start), (5 - 1) * kPiece / 1e6);
  std::remove(file.c_str());
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  bucket.BeforeSend(1);  // takes the change; pays off at most the debt left above
  start = Clock::now();
  for (int i = 0; i < 1024; ++i) bucket.BeforeSend(kPiece);
  EXPECT_LT(SecondsSince(start), 30.0) << "the link stayed slow after the file went";
}

class EnvGuard {
 public:
  EnvGuard(const char* bw, const char* lat) {
    Set("SHOAL_EMULATE_BANDWIDTH_MBPS", bw);
    Set("SHOAL_EMULATE_LATENCY_US", lat);
  }
  ~EnvGuard() {
    unsetenv("SHOAL_EMULATE_BANDWIDTH_MBPS");
    unsetenv("SHOAL_EMULATE_LATENCY_US");
  }

 private:
  static void Set(const char* name, const char* v) {
    if (v) setenv(name, v, 1); else unsetenv(name);
  }
};

TEST(LinkEmulationTest, ParsesEnvironment) {
  {
    EnvGuard env(nullptr, nullptr);
    auto e = LinkEmulationFromEnv();
    ASSERT_TRUE(e.ok());
    EXPECT_FALSE(e->enabled());
  }
  {
    EnvGuard env("100", "250");
    auto e = LinkEmulationFromEnv();
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->bandwidth_mbps, 100);
    EXPECT_EQ(e->latency_us, 250);
  }
  {
    EnvGuard env("fast", nullptr);
    auto e = LinkEmulationFromEnv();
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(e.status().message().find("SHOAL_EMULATE_BANDWIDTH_MBPS"), std::string::npos);
    MemoryKvStore kv;
    EXPECT_EQ(MakeGlooCommunicator(0, 1, &kv, "bad-env", 1s).status().code(),
              StatusCode::kInvalidArgument);
  }
}

TEST(LinkEmulationTest, SpecFieldsOverrideTheEnvironmentOneByOne) {
  EnvGuard env("100", "250");
  auto both = LinkEmulationFor(40, 0);  // the spec sets the rate; the latency is the environment's
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->bandwidth_mbps, 40);
  EXPECT_EQ(both->latency_us, 250);
  auto spec_only = LinkEmulationFor(0, 7);
  ASSERT_TRUE(spec_only.ok());
  EXPECT_EQ(spec_only->bandwidth_mbps, 100);
  EXPECT_EQ(spec_only->latency_us, 7);
}

TEST(LinkEmulationTest, BadEnvironmentMattersOnlyWhereTheSpecDefersToIt) {
  EnvGuard env("fast", nullptr);
  EXPECT_TRUE(LinkEmulationFor(100, 0).ok());
  auto deferred = LinkEmulationFor(0, 5);
  EXPECT_EQ(deferred.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(deferred.status().message().find("SHOAL_EMULATE_BANDWIDTH_MBPS"), std::string::npos);
}

// End to end: with the cap on, an allreduce takes at least what each rank sent,
// less one burst, over the rate. Once set by the environment, once by the
// communicator config (the job spec's path, through MakeCommunicator), where an
// unreadable environment must not matter.
class CappedAllreduceTest : public ::testing::TestWithParam<bool> {};

TEST_P(CappedAllreduceTest, GlooAllreduceRespectsTheCap) {
  const bool from_config = GetParam();
  EnvGuard env(from_config ? "not-a-number" : "100", nullptr);  // 100 Mbit/s = 12.5 MB/s per worker
  MemoryKvStore kv;
  const std::string prefix = testing::UniquePrefix("capped");
  constexpr size_t kCount = 256 << 10;  // 1 MiB of floats
  testing::RunRanks(2, [&](int r) {
    CommunicatorConfig config{"gloo", r, 2, &kv, prefix, 10s};
    if (from_config) config.link_emulation = LinkEmulation{100, 0};
    auto comm = MakeCommunicator(config);
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    std::vector<float> v(kCount, 1.0f);
    const auto start = Clock::now();
    ASSERT_TRUE((*comm)->AllReduce(v.data(), kCount, DType::kF32, ReduceOp::kSum, {}).ok());
    const double elapsed = SecondsSince(start);
    EXPECT_EQ(v[kCount - 1], 2.0f);
    const double sent = static_cast<double>((*comm)->bytes_sent());
    EXPECT_EQ(sent, kCount * 4.0);  // 2*(n-1)/n of the buffer at n = 2
    EXPECT_GE(elapsed, (sent - LinkEmulation{}.burst_bytes) / 12.5e6) << "rank " << r;
  });
}

INSTANTIATE_TEST_SUITE_P(EnvironmentOrConfig, CappedAllreduceTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Config" : "Environment"; });

}  // namespace
}  // namespace shoal

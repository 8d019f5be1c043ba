// CPU-side tests of the GPU helpers: NVML loading where no driver exists, the usage
// meter's arithmetic, local-device choice from launcher variables, the CUDA probe.
#include <cstdlib>

#include <gtest/gtest.h>

#include "common/nvml/cuda_device.h"
#include "common/nvml/local_device.h"
#include "common/nvml/nvml.h"

namespace shoal {
namespace {

TEST(Nvml, MissingLibraryIsUnavailableNotFatal) {
  auto nvml = Nvml::Load("libnvidia-ml-does-not-exist.so.1");
  ASSERT_FALSE(nvml.ok());
  EXPECT_EQ(nvml.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(nvml.status().message().find("unavailable"), std::string::npos);
}

TEST(Nvml, DefaultLoadEitherWorksOrSaysUnavailable) {
  auto nvml = Nvml::Load();
  if (!nvml.ok()) {
    EXPECT_EQ(nvml.status().code(), StatusCode::kUnavailable) << nvml.status().ToString();
    GTEST_SKIP() << "no NVIDIA driver here: " << nvml.status().message();
  }
  for (int d = 0; d < (*nvml)->device_count(); ++d) {
    auto h = (*nvml)->Sample(d);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_GT(h->memory_total_bytes, 0);
  }
  EXPECT_EQ((*nvml)->Sample(-1).status().code(), StatusCode::kInvalidArgument);
}

TEST(GpuMonitor, WithoutDriverReportsNothingAndSaysWhy) {
  GpuMonitor m(0, "libnvidia-ml-does-not-exist.so.1");
  EXPECT_FALSE(m.available());
  EXPECT_FALSE(m.unavailable_reason().empty());
  EXPECT_FALSE(m.Sample(1.0).has_value());
  EXPECT_EQ(m.usage().gpu_seconds(), 0.0);
}

TEST(GpuUsageMeter, PrefersEnergyCounter) {
  GpuUsageMeter m;
  GpuHealth h;
  h.power_watts = 300;
  h.energy_millijoules = 1'000'000;
  m.AddSample(10.0, h);
  h.energy_millijoules = 1'000'000 + 2'500'000;  // 2500 J in 10 s
  m.AddSample(20.0, h);
  EXPECT_DOUBLE_EQ(m.gpu_seconds(), 10.0);
  EXPECT_DOUBLE_EQ(m.joules(), 2500.0);
}

TEST(GpuUsageMeter, FallsBackToPowerTrapezoids) {
  GpuUsageMeter m;
  GpuHealth h;
  h.power_watts = 100;
  m.AddSample(0.0, h);
  h.power_watts = 300;
  m.AddSample(2.0, h);  // mean 200 W over 2 s
  h.power_watts = -1;   // unreadable: the interval counts as GPU time but no energy
  m.AddSample(3.0, h);
  EXPECT_DOUBLE_EQ(m.gpu_seconds(), 3.0);
  EXPECT_DOUBLE_EQ(m.joules(), 400.0);
}

TEST(GpuUsageMeter, CounterResetDoesNotGoNegative) {
  GpuUsageMeter m;
  GpuHealth h;
  h.energy_millijoules = 5000;
  h.power_watts = 10;
  m.AddSample(0.0, h);
  h.energy_millijoules = 10;  // driver reloaded: counter restarted
  m.AddSample(1.0, h);
  EXPECT_DOUBLE_EQ(m.joules(), 10.0);  // trapezoid of 10 W for 1 s
}

class LocalDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    unsetenv("SLURM_LOCALID");
  }
  void TearDown() override { SetUp(); }
};

TEST_F(LocalDeviceTest, ExplicitWins) {
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  EXPECT_EQ(*ChooseLocalDevice(3, 4), 3);
}

TEST_F(LocalDeviceTest, OpenMpiThenSlurmThenZero) {
  EXPECT_EQ(*ChooseLocalDevice(-1, 4), 0);
  setenv("SLURM_LOCALID", "2", 1);
  EXPECT_EQ(*ChooseLocalDevice(-1, 4), 2);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  EXPECT_EQ(*ChooseLocalDevice(-1, 4), 1);
}

TEST_F(LocalDeviceTest, TooFewDevicesIsRefusedWithTheSource) {
  setenv("SLURM_LOCALID", "2", 1);
  auto d = ChooseLocalDevice(-1, 2);
  ASSERT_EQ(d.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("SLURM_LOCALID"), std::string::npos);
  EXPECT_EQ(ChooseLocalDevice(0, 0).status().code(), StatusCode::kUnavailable);
}

TEST(CudaProbe, ReportsAReasonWhenThereIsNoGpu) {
  const CudaProbe& p = ProbeCudaDevices();
  if (p.device_count > 0) GTEST_SKIP() << p.device_count << " GPU(s) present";
  EXPECT_FALSE(p.reason.empty());
  std::cout << "probe: " << p.reason << "\n";
}

}  // namespace
}  // namespace shoal

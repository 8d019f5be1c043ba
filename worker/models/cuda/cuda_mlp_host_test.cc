// CPU tests of the GPU MLP's host side: kernel launch shapes cover every row and column,
// and building the model where no GPU exists is refused with the reason, not a crash.
#include <gtest/gtest.h>

#include "common/nvml/cuda_device.h"
#include "worker/models/cuda/cuda_mlp.h"
#include "worker/models/cuda/mlp_launch.h"

namespace shoal::gpu_mlp {
namespace {

TEST(CudaMlpHost, RowWarpLaunchCoversRows) {
  for (int rows : {1, 7, 8, 9, 64, 1000}) {
    const Launch2 l = RowWarpLaunch(rows);
    EXPECT_EQ(l.block_x, 32u);  // one warp per row: shuffles assume a full warp
    EXPECT_GE(l.grid_x * l.block_y, unsigned(rows));
    EXPECT_LT((l.grid_x - 1) * l.block_y, unsigned(rows));
  }
  EXPECT_EQ(RowWarpLaunch(0).grid_x, 1u);
}

TEST(CudaMlpHost, ColumnTilesCoverWidth) {
  for (int w : {1, 10, 32, 33, 784}) {
    const Launch2 l = ColumnTileLaunch(w);
    EXPECT_GE(l.grid_x * l.block_x, unsigned(w));
    EXPECT_LT((l.grid_x - 1) * l.block_x, unsigned(w));
    EXPECT_LE(l.block_x * l.block_y, 1024u);
  }
}

TEST(CudaMlpHost, ElementwiseBlocks) {
  EXPECT_EQ(ElementwiseBlocks(0), 1u);
  EXPECT_EQ(ElementwiseBlocks(256), 1u);
  EXPECT_EQ(ElementwiseBlocks(257), 2u);
  EXPECT_EQ(ElementwiseBlocks(size_t{1} << 40), 4096u);
}

TEST(CudaMlpHost, CreateWithoutGpuIsUnavailableWithReason) {
  if (ProbeCudaDevices().device_count > 0) GTEST_SKIP() << "a GPU is present; cuda_mlp_test covers it";
  auto m = CudaMlpModel::Create({784, 256, 10}, 1);
  ASSERT_EQ(m.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(m.status().message().find("no GPU"), std::string::npos) << m.status().message();
  EXPECT_EQ(CudaMlpModel::Create({784}, 1).status().code(), StatusCode::kInvalidArgument);  // layers checked first
}

}  // namespace
}  // namespace shoal::gpu_mlp

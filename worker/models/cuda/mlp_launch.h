// Launch shapes of the GPU MLP's kernels, as plain C++ so they are tested on a CPU:
// row-wise kernels put one warp on each row; column reductions tile 32 columns per block
// so every warp reads 32 consecutive floats of a row-major matrix.
#pragma once

#include <cstddef>

namespace shoal::gpu_mlp {

struct Launch2 {
  unsigned grid_x = 1;
  unsigned block_x = 32, block_y = 1;
};

// Softmax cross-entropy: one warp per row, 8 rows per block.
constexpr unsigned kRowsPerBlock = 8;
inline Launch2 RowWarpLaunch(int rows) {
  Launch2 l;
  l.block_x = 32;
  l.block_y = kRowsPerBlock;
  l.grid_x = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  if (l.grid_x == 0) l.grid_x = 1;
  return l;
}

// Column sums (bias gradients): 32 columns by 8 row-slices per block.
constexpr unsigned kColTile = 32, kRowSlices = 8;
inline Launch2 ColumnTileLaunch(int width) {
  Launch2 l;
  l.block_x = kColTile;
  l.block_y = kRowSlices;
  l.grid_x = static_cast<unsigned>((width + kColTile - 1) / kColTile);
  if (l.grid_x == 0) l.grid_x = 1;
  return l;
}

// Elementwise (bias + ReLU, SGD): grid-stride, capped.
inline unsigned ElementwiseBlocks(size_t n, unsigned threads = 256, unsigned cap = 4096) {
  const size_t need = (n + threads - 1) / threads;
  return static_cast<unsigned>(need == 0 ? 1 : (need < cap ? need : cap));
}

}  // namespace shoal::gpu_mlp

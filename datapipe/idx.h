// Reader for the IDX files Fashion-MNIST ships in (gzip-compressed or plain):
// images become f32 in [0, 1], labels int32. Truncated or inconsistent files are refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal {

struct InMemoryDataset {
  int64_t n = 0;
  int dim = 0;            // features per record (rows * cols for images)
  int num_classes = 0;    // max label + 1
  std::vector<float> x;   // n * dim
  std::vector<int32_t> y; // n
};

// Raw IDX contents: the magic's element type and dimensions plus the payload bytes.
struct IdxArray {
  std::vector<int64_t> dims;
  std::string bytes;  // unsigned bytes, dims product long
};

StatusOr<IdxArray> ReadIdxFile(const std::string& path);
// Pairs an images file (3-D ubyte) with a labels file (1-D ubyte).
StatusOr<InMemoryDataset> LoadIdxPair(const std::string& images_path, const std::string& labels_path);
// split: "train" or "t10k"; finds <dir>/<split>-images-idx3-ubyte[.gz] and the labels.
StatusOr<InMemoryDataset> LoadFashionMnist(const std::string& dir, const std::string& split);

// Uniform features in [0, 1) and uniform labels from a seeded mt19937_64: a dataset for
// tests and benchmarks whose content does not matter, the same for the same seed.
InMemoryDataset RandomDataset(int64_t n, int dim, int classes, uint64_t seed);

}  // namespace shoal

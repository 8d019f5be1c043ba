// Helpers shared by the datapipe tests: a self-removing temp folder, small synthetic
// datasets (clustered classes whose features encode the record, so content can be
// checked), and writing them as a signed or unsigned dataset folder.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "common/signing.h"
#include "datapipe/ingest.h"

namespace shoal::testing_util {

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("shoal-dp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
                .string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct Synthetic {
  int dim = 0, classes = 0;
  std::vector<float> x;
  std::vector<int32_t> y;
  int64_t n() const { return static_cast<int64_t>(y.size()); }
};

// `per_class` records in each of `classes` well separated clusters in [0, 1]^dim: class
// c is bright on its own block of features; small deterministic jitter makes every
// record distinct (feature 0 also encodes the record index, for content checks).
inline Synthetic MakeClusters(int classes, int per_class, int dim) {
  Synthetic s;
  s.dim = dim;
  s.classes = classes;
  uint64_t state = 12345;
  auto rnd = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>((state >> 33) & 0xFFFFFF) / 16777216.0f;
  };
  const int block = std::max(1, dim / classes);
  for (int i = 0; i < classes * per_class; ++i) {
    int c = i % classes;
    for (int j = 0; j < dim; ++j) {
      bool on = j / block == c;
      float v = (on ? 0.7f : 0.15f) + 0.2f * (rnd() - 0.5f);
      s.x.push_back(std::min(1.0f, std::max(0.0f, v)));
    }
    s.x[static_cast<size_t>(i) * dim] = static_cast<float>(i) / (classes * per_class);
    s.y.push_back(c);
  }
  return s;
}

// Writes `s` through the raw-record ingest into `out` (shards of `shard_records`).
inline IngestReport WriteDataset(const Synthetic& s, const std::string& out, int64_t shard_records,
                                 const KeyPair* key, const std::string& scratch_dir) {
  std::string raw = scratch_dir + "/input.raw";
  EXPECT_TRUE(WriteRawRecords(raw, s.x.data(), s.y.data(), s.n(), s.dim).ok());
  IngestOptions o;
  o.shard_records = shard_records;
  o.sign_key = key;
  o.num_classes = s.classes;
  o.name = "synthetic";
  o.licence = "CC0";
  o.force = true;
  auto r = IngestRaw(raw, s.dim, out, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  std::filesystem::remove(raw);
  return r.ok() ? *r : IngestReport{};
}

// A gzip-compressed IDX file (unsigned bytes) with the given dimensions and payload.
inline void WriteGzIdx(const std::string& path, std::vector<uint32_t> dims, const std::string& payload) {
  std::string h = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>((d >> s) & 0xff));
  h += payload;
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  gzwrite(f, h.data(), static_cast<unsigned>(h.size()));
  gzclose(f);
}

}  // namespace shoal::testing_util

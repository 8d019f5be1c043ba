// Loader: every admitted record exactly once per epoch for world sizes 1..8, also when
// the world changes mid-epoch; resume from (epoch, cursor) reproduces the sequence;
// quarantined records never come out; content matches the shards.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "datapipe/loader.h"
#include "datapipe/scan.h"
#include "datapipe/test_util.h"

namespace shoal {
namespace {

using testing_util::MakeClusters;
using testing_util::Synthetic;
using testing_util::TempDir;

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = GenerateKeyPair();
    data_ = MakeClusters(4, 103, 8);  // 412 records: global batches leave partial steps
    testing_util::WriteDataset(data_, dir(), 100, &key_, tmp_.path());
  }
  std::string dir() const { return tmp_ / "ds"; }
  LoaderOptions Options(int64_t global_batch, int rank, int world) const {
    LoaderOptions o;
    o.trust.trust.Add(key_.public_key);
    o.global_batch = global_batch;
    o.seed = 99;
    o.rank = rank;
    o.world = world;
    return o;
  }
  std::vector<std::unique_ptr<Loader>> OpenRanks(int64_t global_batch, int world) {
    std::vector<std::unique_ptr<Loader>> out;
    for (int r = 0; r < world; ++r) {
      auto l = Loader::Open(dir(), Options(global_batch, r, world));
      EXPECT_TRUE(l.ok()) << l.status().ToString();
      if (l.ok()) out.push_back(std::move(*l));
    }
    return out;
  }
  // One step on every rank; returns the ids of the step, checking the ranks agree.
  std::vector<int64_t> Step(std::vector<std::unique_ptr<Loader>>& ranks) {
    std::vector<int64_t> ids;
    int64_t cursor = -1;
    for (auto& l : ranks) {
      auto b = l->Next();
      EXPECT_TRUE(b.ok());
      if (cursor >= 0) {
        EXPECT_EQ(b->cursor, cursor);
      }
      cursor = b->cursor;
      EXPECT_EQ(b->n, static_cast<int>(b->record_ids.size()));
      ids.insert(ids.end(), b->record_ids.begin(), b->record_ids.end());
    }
    return ids;
  }
  TempDir tmp_;
  KeyPair key_;
  Synthetic data_;
};

TEST_F(LoaderTest, EveryRecordOncePerEpochForWorldSizes1To8) {
  for (int world = 1; world <= 8; ++world) {
    auto ranks = OpenRanks(64, world);
    ASSERT_EQ(static_cast<int>(ranks.size()), world);
    const int64_t steps = ranks[0]->steps_per_epoch();
    EXPECT_EQ(steps, 7);  // 412 / 64, last step partial
    for (int epoch = 0; epoch < 2; ++epoch) {
      std::multiset<int64_t> seen;
      for (int64_t s = 0; s < steps; ++s)
        for (int64_t id : Step(ranks)) seen.insert(id);
      EXPECT_EQ(seen.size(), 412u) << "world " << world;
      EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 412u) << "world " << world;
      EXPECT_EQ(ranks[0]->epoch(), epoch + 1);
      EXPECT_EQ(ranks[0]->cursor(), 0);
    }
  }
}

TEST_F(LoaderTest, WorldChangeMidEpochNeitherDropsNorRepeats) {
  auto ranks = OpenRanks(50, 3);
  std::multiset<int64_t> seen;
  for (int s = 0; s < 3; ++s)
    for (int64_t id : Step(ranks)) seen.insert(id);
  const int64_t cursor = ranks[0]->cursor();
  EXPECT_EQ(cursor, 150);
  // Grow to 5 ranks at this cursor: old ranks re-cut, new ranks seek to the same spot.
  for (int r = 0; r < 3; ++r) ASSERT_TRUE(ranks[r]->SetWorld(r, 5).ok());
  for (int r = 3; r < 5; ++r) {
    LoaderOptions o = Options(50, r, 5);
    o.cursor = cursor;
    auto l = Loader::Open(dir(), o);
    ASSERT_TRUE(l.ok());
    ranks.push_back(std::move(*l));
  }
  for (int s = 0; s < 2; ++s)
    for (int64_t id : Step(ranks)) seen.insert(id);
  // Shrink to 2 ranks for the rest of the epoch.
  ranks.resize(2);
  for (int r = 0; r < 2; ++r) ASSERT_TRUE(ranks[r]->SetWorld(r, 2).ok());
  while (ranks[0]->epoch() == 0)
    for (int64_t id : Step(ranks)) seen.insert(id);
  EXPECT_EQ(seen.size(), 412u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 412u);
}

TEST_F(LoaderTest, ResumeFromEpochAndCursorReproducesTheSequence) {
  auto a = Loader::Open(dir(), Options(32, 1, 3));
  ASSERT_TRUE(a.ok());
  std::vector<std::vector<int64_t>> first;
  for (int s = 0; s < 20; ++s) {  // crosses into epoch 1
    auto b = (*a)->Next();
    ASSERT_TRUE(b.ok());
    first.push_back(b->record_ids);
  }
  LoaderOptions o = Options(32, 1, 3);
  o.epoch = 0;
  o.cursor = 32 * 9;
  o.prefetch_batches = 0;  // and without the prefetch thread
  auto b = Loader::Open(dir(), o);
  ASSERT_TRUE(b.ok());
  for (int s = 9; s < 20; ++s) {
    auto batch = (*b)->Next();
    ASSERT_TRUE(batch.ok());
    EXPECT_EQ(batch->record_ids, first[s]) << "step " << s;
  }
  // Seek on a running loader drops what it had prefetched.
  ASSERT_TRUE((*a)->Seek(0, 32 * 4).ok());
  auto again = (*a)->Next();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->record_ids, first[4]);
  EXPECT_FALSE((*a)->Seek(0, 413).ok());
  EXPECT_FALSE((*a)->SetWorld(3, 3).ok());
}

TEST_F(LoaderTest, BatchesCarryTheStoredContent) {
  auto l = Loader::Open(dir(), Options(40, 0, 1));
  ASSERT_TRUE(l.ok());
  auto b = (*l)->Next();
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->n, 40);
  EXPECT_EQ(b->dim, 8);
  for (int i = 0; i < b->n; ++i) {
    int64_t id = b->record_ids[i];
    EXPECT_EQ(b->y[i], data_.y[id]);
    for (int j = 0; j < 8; ++j) EXPECT_FLOAT_EQ(b->x[i * 8 + j], data_.x[id * 8 + j]);
  }
  EXPECT_EQ((*l)->stats().batches, 1);
  EXPECT_FALSE((*l)->scanned());
}

TEST_F(LoaderTest, QuarantinedRecordsNeverComeOut) {
  // Plant: a NaN record, a bad label, an exact conflicting duplicate.
  Synthetic s = data_;
  s.x[10 * 8 + 3] = NAN;
  s.y[11] = 9;
  std::copy(s.x.begin() + 20 * 8, s.x.begin() + 21 * 8, s.x.begin() + 300 * 8);
  s.y[300] = (s.y[20] + 1) % 4;
  testing_util::WriteDataset(s, dir(), 100, &key_, tmp_.path());
  LoaderOptions o = Options(64, 0, 1);
  o.require_scan = true;
  EXPECT_EQ(Loader::Open(dir(), o).status().code(), StatusCode::kNotFound);  // no scan yet
  ScanOptions so;
  auto scan = ScanDataset(dir(), so);
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  auto q = ReadQuarantine(dir());
  std::set<int64_t> held;
  for (const auto& e : *q) held.insert(e.record_id);
  for (int64_t id : {10, 11, 20, 300}) EXPECT_TRUE(held.count(id)) << id;
  auto l = Loader::Open(dir(), o);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_TRUE((*l)->scanned());
  EXPECT_EQ((*l)->size(), scan->admitted);
  EXPECT_EQ((*l)->quarantined(), static_cast<int64_t>(held.size()));
  std::set<int64_t> seen;
  for (int64_t st = 0; st < (*l)->steps_per_epoch(); ++st) {
    auto b = (*l)->Next();
    ASSERT_TRUE(b.ok());
    for (int64_t id : b->record_ids) {
      EXPECT_FALSE(held.count(id)) << "quarantined record " << id << " came out";
      seen.insert(id);
    }
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), scan->admitted);
  auto mem = LoadAdmittedInMemory(dir(), o.trust.trust, false);
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ(mem->n, scan->admitted);
  for (float v : mem->x) EXPECT_TRUE(std::isfinite(v));
  // Re-ingesting changes the manifest: the old scan is stale and refused, not trusted.
  testing_util::WriteDataset(data_, dir() + "2", 50, &key_, tmp_.path());
  std::filesystem::rename(dir() + "/scan", dir() + "2/scan");
  EXPECT_EQ(Loader::Open(dir() + "2", o).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(LoaderTest, RefusesTamperedDataAndBadOptions) {
  std::filesystem::resize_file(dir() + "/shard-00001.rec", 100);
  auto l = Loader::Open(dir(), Options(64, 0, 1));
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("shard-00001.rec"), std::string::npos);
  EXPECT_FALSE(Loader::Open(dir(), Options(0, 0, 1)).ok());
  EXPECT_FALSE(Loader::Open(dir(), Options(8, 2, 2)).ok());
}

TEST_F(LoaderTest, PrefetchMeasuresWaitTime) {
  LoaderOptions o = Options(16, 0, 1);
  o.prefetch_batches = 2;
  auto l = Loader::Open(dir(), o);
  ASSERT_TRUE(l.ok());
  for (int i = 0; i < 60; ++i) ASSERT_TRUE((*l)->Next().ok());
  LoaderStats s = (*l)->stats();
  EXPECT_EQ(s.batches, 60);
  EXPECT_GE(s.wait_seconds, 0.0);
  EXPECT_GT(s.build_seconds, 0.0);
}

}  // namespace
}  // namespace shoal

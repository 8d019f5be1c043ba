// Ingest and provenance: manifest round trip, signing, and every corruption refused by
// name (bit flip, truncated shard, unknown shard, edited manifest, bad signature,
// untrusted key); ingest refuses bad input and an existing folder without --force.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "common/file_util.h"
#include "datapipe/manifest.h"
#include "datapipe/prepare.h"
#include "datapipe/scan.h"
#include "datapipe/test_util.h"

namespace shoal {
namespace {

using testing_util::MakeClusters;
using testing_util::TempDir;
using testing_util::WriteDataset;

DatasetTrust Trusting(const KeyPair& key) {
  DatasetTrust t;
  t.trust.Add(key.public_key);
  return t;
}

void ExpectRefused(const std::string& dir, const DatasetTrust& trust, const std::string& needle) {
  auto r = OpenDataset(dir, trust);
  ASSERT_FALSE(r.ok()) << "expected refusal mentioning " << needle;
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().ToString();
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = GenerateKeyPair();
    data_ = MakeClusters(4, 50, 12);  // 200 records
    report_ = WriteDataset(data_, dir(), 64, &key_, tmp_.path());
  }
  std::string dir() const { return tmp_ / "ds"; }
  std::string shard(int i) const { return dir() + "/" + ShardFileName(i); }
  TempDir tmp_;
  KeyPair key_;
  testing_util::Synthetic data_;
  IngestReport report_;
};

TEST_F(DatasetTest, ManifestRoundTrip) {
  EXPECT_EQ(report_.records, 200);
  EXPECT_EQ(report_.shards, 4);  // 64 + 64 + 64 + 8
  EXPECT_EQ(report_.signer_key_id, key_.public_key.key_id);
  auto ds = OpenDataset(dir(), Trusting(key_));
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  const DatasetManifest& m = ds->manifest;
  EXPECT_EQ(m.format(), kManifestFormat);
  EXPECT_EQ(m.name(), "synthetic");
  EXPECT_EQ(m.licence(), "CC0");
  EXPECT_EQ(m.total_records(), 200);
  EXPECT_EQ(m.schema().num_classes(), 4);
  EXPECT_EQ(m.schema().dtype(), "f32");
  ASSERT_EQ(m.sources_size(), 1);
  EXPECT_EQ(m.sources(0).sha256().size(), 64u);
  EXPECT_EQ(m.shards(3).first_record_id(), 192);
  EXPECT_EQ(ds->signer_key_id, key_.public_key.key_id);
  ASSERT_EQ(ds->shards.size(), 4u);
  // Record ids are global: shard first id + index, and content survives the trip.
  float f[12];
  ds->shards[2].ReadFeatures(5, f);
  EXPECT_FLOAT_EQ(f[0], data_.x[(128 + 5) * 12]);
  EXPECT_EQ(ds->shards[2].label(5), data_.y[133]);
}

TEST_F(DatasetTest, BitFlipInShardRefusedByName) {
  auto bytes = ReadFile(shard(1));
  ASSERT_TRUE(bytes.ok());
  (*bytes)[kShardHeaderBytes + 3] ^= 0x04;
  ASSERT_TRUE(WriteFileAtomic(shard(1), *bytes).ok());
  ExpectRefused(dir(), Trusting(key_), "shard-00001.rec");
}

TEST_F(DatasetTest, TruncatedShardRefusedByName) {
  std::filesystem::resize_file(shard(2), std::filesystem::file_size(shard(2)) - 40);
  ExpectRefused(dir(), Trusting(key_), "shard-00002.rec");
}

TEST_F(DatasetTest, MissingShardRefusedByName) {
  std::filesystem::remove(shard(3));
  ExpectRefused(dir(), Trusting(key_), "shard-00003.rec");
}

TEST_F(DatasetTest, UnknownShardRefusedByName) {
  std::filesystem::copy_file(shard(0), dir() + "/shard-00009.rec");
  ExpectRefused(dir(), Trusting(key_), "shard-00009.rec");
  std::filesystem::remove(dir() + "/shard-00009.rec");
  ASSERT_TRUE(WriteFileAtomic(dir() + "/extra.rec", "x").ok());
  ExpectRefused(dir(), Trusting(key_), "extra.rec");
}

TEST_F(DatasetTest, EditedManifestRefused) {
  auto m = ReadManifestUnverified(dir());
  ASSERT_TRUE(m.ok());
  m->set_licence("proprietary");
  std::string bytes;
  ASSERT_TRUE(m->SerializeToString(&bytes));
  ASSERT_TRUE(WriteFileAtomic(dir() + "/" + kDatasetManifestFile, bytes).ok());
  ExpectRefused(dir(), Trusting(key_), "manifest.pb");
  // Unsigned but allowed: an edited shard digest still catches the mismatching shard.
  std::filesystem::remove(dir() + "/" + kManifestSigFile);
  m->mutable_shards(0)->set_sha256(std::string(64, 'a'));
  ASSERT_TRUE(m->SerializeToString(&bytes));
  ASSERT_TRUE(WriteFileAtomic(dir() + "/" + kDatasetManifestFile, bytes).ok());
  DatasetTrust lax;
  lax.allow_unsigned = true;
  ExpectRefused(dir(), lax, "shard-00000.rec");
  ASSERT_TRUE(WriteFileAtomic(dir() + "/" + kDatasetManifestFile, "garbage\xff").ok());
  ExpectRefused(dir(), lax, "manifest.pb");
}

TEST_F(DatasetTest, BadSignatureRefused) {
  auto env = ReadFile(dir() + "/" + kManifestSigFile);
  ASSERT_TRUE(env.ok());
  size_t at = env->find("\"sig\": \"") + 9;
  (*env)[at] = (*env)[at] == 'A' ? 'B' : 'A';
  ASSERT_TRUE(WriteFileAtomic(dir() + "/" + kManifestSigFile, *env).ok());
  ExpectRefused(dir(), Trusting(key_), "does not verify");
  ASSERT_TRUE(WriteFileAtomic(dir() + "/" + kManifestSigFile, "{not json").ok());
  ExpectRefused(dir(), Trusting(key_), "manifest.sig");
}

TEST_F(DatasetTest, UntrustedKeyAndUnsignedRefused) {
  KeyPair other = GenerateKeyPair();
  ExpectRefused(dir(), Trusting(other), "untrusted key");
  ExpectRefused(dir(), DatasetTrust{}, "--trust");
  std::filesystem::remove(dir() + "/" + kManifestSigFile);
  ExpectRefused(dir(), Trusting(key_), "unsigned");
  DatasetTrust lax;
  lax.allow_unsigned = true;
  auto ds = OpenDataset(dir(), lax);
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(ds->signer_key_id, "");
  EXPECT_NE(ds->provenance.find("unsigned"), std::string::npos);
}

TEST_F(DatasetTest, ShardSwappedWithAnotherSignedShardRefused) {
  // Both shards are genuine and signed, but not under these names.
  std::filesystem::copy_file(shard(0), shard(1), std::filesystem::copy_options::overwrite_existing);
  ExpectRefused(dir(), Trusting(key_), "shard-00001.rec");
}

TEST_F(DatasetTest, IngestRefusesToOverwriteWithoutForce) {
  std::string raw = tmp_ / "r.raw";
  ASSERT_TRUE(WriteRawRecords(raw, data_.x.data(), data_.y.data(), data_.n(), data_.dim).ok());
  IngestOptions o;
  auto again = IngestRaw(raw, data_.dim, dir(), o);
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(again.status().message().find("--force"), std::string::npos);
  o.force = true;
  o.num_classes = 4;
  auto forced = IngestRaw(raw, data_.dim, dir(), o);
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  EXPECT_FALSE(PathExists(dir() + "/" + kManifestSigFile));  // replaced as a whole
  EXPECT_FALSE(PathExists(shard(3)));                         // default shard size: one shard
}

TEST(Ingest, RefusesBadInputWithClearErrors) {
  TempDir tmp;
  IngestOptions o;
  // Raw input that is not a whole number of records.
  ASSERT_TRUE(WriteFileAtomic(tmp / "t.raw", std::string(4 + 4 * 3 + 5, '\0')).ok());
  auto raw = IngestRaw(tmp / "t.raw", 3, tmp / "out", o);
  EXPECT_EQ(raw.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(raw.status().message().find("truncated"), std::string::npos);
  // CSV with an inconsistent line.
  ASSERT_TRUE(WriteFileAtomic(tmp / "a.csv", "# label,f\n1,0.5,0.25\n0,nan,1\n2,0.1\n").ok());
  auto csv = IngestCsv(tmp / "a.csv", tmp / "out", o);
  EXPECT_NE(csv.status().message().find("line 4"), std::string::npos) << csv.status().ToString();
  ASSERT_TRUE(WriteFileAtomic(tmp / "b.csv", "x,1\n").ok());
  EXPECT_EQ(IngestCsv(tmp / "b.csv", tmp / "out", o).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(PathExists(tmp / "out"));  // nothing half-written
  // IDX with inconsistent counts (3 images, 2 labels).
  auto idx = [&](const std::string& name, std::vector<uint32_t> dims, size_t payload) {
    std::string h = {0, 0, 8, static_cast<char>(dims.size())};
    for (uint32_t d : dims)
      for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>((d >> s) & 0xff));
    EXPECT_TRUE(WriteFileAtomic(tmp / name, h + std::string(payload, '\1')).ok());
    return tmp / name;
  };
  auto mismatch = IngestIdx(idx("i", {3, 2, 2}, 12), idx("l", {2}, 2), tmp / "out", o);
  EXPECT_NE(mismatch.status().message().find("3 images"), std::string::npos) << mismatch.status().ToString();
  auto truncated = IngestIdx(idx("i2", {3, 2, 2}, 11), idx("l2", {3}, 3), tmp / "out", o);
  EXPECT_EQ(truncated.status().code(), StatusCode::kDataLoss);
  // A good CSV works, with NaN kept for the scan to judge.
  ASSERT_TRUE(WriteFileAtomic(tmp / "c.csv", "1,0.5,0.25\r\n0,nan,1\n").ok());
  auto good = IngestCsv(tmp / "c.csv", tmp / "out", o);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ(good->records, 2);
  EXPECT_EQ(good->feature_count, 2);
  EXPECT_EQ(good->num_classes, 2);
}

TEST(Ingest, HostileNamesNeverBreakReports) {
  TempDir tmp;
  auto s = MakeClusters(2, 20, 4);
  std::string raw = tmp / "r.raw";
  ASSERT_TRUE(WriteRawRecords(raw, s.x.data(), s.y.data(), s.n(), s.dim).ok());
  IngestOptions o;
  o.name = "bad\xff\xfe utf-8";
  o.licence = "\xc3";
  auto r = IngestRaw(raw, s.dim, tmp / "ds", o);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("UTF-8"), std::string::npos);
  EXPECT_FALSE(PathExists(tmp / "ds"));
  o.name = "caf\xc3\xa9 \xe2\x82\xac";  // valid UTF-8 is fine
  o.licence = "MIT";
  r = IngestRaw(raw, s.dim, tmp / "ds", o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ScanOptions so;
  auto scan = ScanDataset(tmp / "ds", so);
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  EXPECT_NE(scan->ToJson().find("records"), std::string::npos);
  // A manifest that is not a valid proto (bad UTF-8 inside) is refused, not a crash.
  auto bytes = ReadFile(tmp / "ds/manifest.pb");
  size_t at = bytes->find("caf");
  ASSERT_NE(at, std::string::npos);
  (*bytes)[at] = '\xff';
  ASSERT_TRUE(WriteFileAtomic(tmp / "ds/manifest.pb", *bytes).ok());
  EXPECT_EQ(ScanDataset(tmp / "ds", so).status().code(), StatusCode::kDataLoss);
}

TEST(Prepare, IngestsOnceScansWhenStaleAndRefusesTamperedData) {
  TempDir tmp;
  auto s = MakeClusters(3, 60, 9);
  std::string pixels, labels;
  for (float v : s.x) pixels.push_back(static_cast<char>(static_cast<uint8_t>(v * 255)));
  for (int32_t y : s.y) labels.push_back(static_cast<char>(y));
  testing_util::WriteGzIdx(tmp / "train-images-idx3-ubyte.gz", {180, 3, 3}, pixels);
  testing_util::WriteGzIdx(tmp / "train-labels-idx1-ubyte.gz", {180}, labels);
  KeyPair key = GenerateKeyPair();
  PrepareOptions o;
  o.idx_dir = tmp.path();
  o.out_dir = tmp / "ds";
  o.sign_key = &key;
  o.shard_records = 50;
  o.scan.trust = Trusting(key);
  auto first = PrepareIdxDataset(o);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->ingested && first->scanned);
  EXPECT_EQ(first->records, 180);
  EXPECT_EQ(first->admitted + first->quarantined, 180);
  auto second = PrepareIdxDataset(o);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->ingested || second->scanned);
  EXPECT_EQ(second->admitted, first->admitted);
  std::filesystem::remove_all(tmp / "ds/scan");
  auto third = PrepareIdxDataset(o);
  ASSERT_TRUE(third.ok());
  EXPECT_TRUE(third->scanned && !third->ingested);
  std::filesystem::resize_file(tmp / "ds/shard-00001.rec", 10);
  auto tampered = PrepareIdxDataset(o);
  ASSERT_FALSE(tampered.ok());
  EXPECT_NE(tampered.status().message().find("shard-00001.rec"), std::string::npos);
}

}  // namespace
}  // namespace shoal

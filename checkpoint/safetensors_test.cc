// safetensors export: the header is checked with nlohmann_json independently of our
// reader (8-byte little-endian length, dtype, shape, contiguous data_offsets, bytes),
// then our reader round-trips it and refuses hostile files.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "checkpoint/async_writer.h"
#include "checkpoint/reader.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/test_util.h"
#include "common/file_util.h"

namespace shoal {
namespace {

using testing::MakeSnapshot;
using testing::TempDir;

LoadedCheckpoint SaveAndLoad(const TempDir& tmp, const TrainerSnapshot& snap) {
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  auto cp = AsyncCheckpointer::Create(o);
  EXPECT_TRUE(cp.ok() && (*cp)->SaveNow(snap).ok());
  return *LoadCheckpoint(o.job_dir, TrustStore(), /*allow_unsigned=*/true);
}

TEST(Safetensors, ExportMatchesTheFormat) {
  TempDir tmp;
  TrainerSnapshot snap = MakeSnapshot(4, 20000, 77);
  LoadedCheckpoint ckpt = SaveAndLoad(tmp, snap);
  const std::string out = tmp / "model.safetensors";
  ASSERT_TRUE(ExportSafetensors(ckpt, out).ok());
  std::string bytes = *ReadFile(out);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ(n % 8, 0u);  // padded so tensor data starts 8-byte aligned
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  const std::string data = bytes.substr(8 + n);
  EXPECT_EQ(header["__metadata__"]["shoal.step"], "77");
  EXPECT_EQ(header["__metadata__"]["shoal.manifest_sha256"], ckpt.manifest_digest);
  EXPECT_FALSE(header.contains("optim.momentum"));  // weights only by default
  EXPECT_FALSE(header.contains("codec.powersgd.q"));
  uint64_t covered = 0;
  for (const auto& t : snap.tensors) {
    if (t.name.rfind("optim.", 0) == 0 || t.name.rfind("codec.", 0) == 0) continue;
    ASSERT_TRUE(header.contains(t.name)) << t.name;
    const auto& e = header[t.name];
    EXPECT_EQ(e["dtype"], t.dtype);
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), t.shape);
    uint64_t b = e["data_offsets"][0], end = e["data_offsets"][1];
    ASSERT_EQ(end - b, t.bytes.size());
    EXPECT_TRUE(data.compare(b, end - b, t.bytes) == 0) << t.name;
    covered += end - b;
  }
  EXPECT_EQ(covered, data.size());

  auto parsed = ReadSafetensors(out);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->tensors.size(), 2u);
  EXPECT_EQ(parsed->metadata.at("shoal.job_id"), "job-test");
}

TEST(Safetensors, IncludeOptimizerRoundTripsEveryTensor) {
  TempDir tmp;
  TrainerSnapshot snap = MakeSnapshot(5, 9000, 3);
  snap.rank_tensors = {testing::MakeRankState(5, 0, 333)};  // this rank's codec state
  LoadedCheckpoint ckpt = SaveAndLoad(tmp, snap);
  ASSERT_TRUE(ExportSafetensors(ckpt, tmp / "all.safetensors", /*include_optimizer=*/true).ok());
  auto parsed = ReadSafetensors(tmp / "all.safetensors");
  ASSERT_TRUE(parsed.ok());
  std::vector<NamedTensor> all = snap.tensors;  // manifest order, then the rank states
  all.push_back(snap.rank_tensors[0]);
  ASSERT_EQ(parsed->tensors.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(parsed->tensors[i].name, all[i].name);
    EXPECT_EQ(parsed->tensors[i].shape, all[i].shape);
    EXPECT_TRUE(parsed->tensors[i].bytes == all[i].bytes);
  }
  // Weights only by default: no rank state either.
  ASSERT_TRUE(ExportSafetensors(ckpt, tmp / "weights.safetensors").ok());
  auto weights = ReadSafetensors(tmp / "weights.safetensors");
  ASSERT_TRUE(weights.ok());
  for (const auto& t : weights->tensors) EXPECT_EQ(t.name.rfind("codec.", 0), std::string::npos) << t.name;
}

std::string Build(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

TEST(Safetensors, ReaderRefusesHostileFiles) {
  std::string ok = Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(8, 'x'));
  ASSERT_TRUE(ParseSafetensors(ok).ok());
  EXPECT_FALSE(ParseSafetensors("abc").ok());
  std::string huge = ok;
  huge[7] = '\x7f';  // header length far beyond the file
  EXPECT_FALSE(ParseSafetensors(huge).ok());
  for (const char* h : {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",      // size vs shape
                        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})",     // past the end
                        R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                        R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})",
                        R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})",
                        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":"x"}})",
                        R"({"__metadata__":{"k":1}})", R"([1,2])", R"({"a":)"})
    EXPECT_FALSE(ParseSafetensors(Build(h, std::string(8, 'x'))).ok()) << h;
}

}  // namespace
}  // namespace shoal

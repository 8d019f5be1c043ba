// The `data` subcommands, run in-process through CLI11 exactly as shoalctl mounts them:
// ingest (idx, raw, csv), scan, quarantine and verify, with their exit codes and JSON.
#include <gtest/gtest.h>
#include <zlib.h>

#include <nlohmann/json.hpp>
#include <set>

#include "common/file_util.h"
#include "common/signing.h"
#include "datapipe/commands.h"
#include "datapipe/test_util.h"

namespace shoal {
namespace {

using testing_util::TempDir;
using testing_util::WriteGzIdx;

struct CliResult {
  int code = -1;
  std::string out;
  nlohmann::json json() const { return nlohmann::json::parse(out, nullptr, false); }
};

CliResult RunCli(std::vector<std::string> args) {
  CLI::App app{"test"};
  CliResult r;
  RegisterDataCommands(app, &r.code);
  std::vector<const char*> argv = {"shoalctl"};
  for (const auto& a : args) argv.push_back(a.c_str());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    r.code = app.exit(e);
  }
  r.out = ::testing::internal::GetCapturedStdout();
  ::testing::internal::GetCapturedStderr();
  return r;
}

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = testing_util::MakeClusters(3, 100, 16);  // 300 "images" of 4x4
    std::string pixels, labels;
    for (float v : s.x) pixels.push_back(static_cast<char>(static_cast<uint8_t>(v * 255)));
    for (int32_t y : s.y) labels.push_back(static_cast<char>(y));
    WriteGzIdx(tmp_ / "img.gz", {300, 4, 4}, pixels);
    WriteGzIdx(tmp_ / "lab.gz", {300}, labels);
    ASSERT_TRUE(WriteKeyPair(GenerateKeyPair(), tmp_.path(), "owner").ok());
  }
  std::vector<std::string> Ingest() {
    return {"data", "ingest", "--format", "idx", "--images", tmp_ / "img.gz", "--labels", tmp_ / "lab.gz",
            "--out", tmp_ / "ds", "--shard-records", "128", "--sign-key", tmp_ / "owner.key", "--json"};
  }
  TempDir tmp_;
};

TEST_F(CommandsTest, IngestScanQuarantineVerify) {
  CliResult ing = RunCli(Ingest());
  ASSERT_EQ(ing.code, 0) << ing.out;
  EXPECT_EQ(ing.json()["records"], 300);
  EXPECT_EQ(ing.json()["shards"], 3);
  EXPECT_EQ(ing.json()["signed"], true);
  EXPECT_EQ(RunCli(Ingest()).code, 1);  // exists, no --force
  auto forced = Ingest();
  forced.push_back("--force");
  EXPECT_EQ(RunCli(forced).code, 0);

  CliResult ok = RunCli({"data", "verify", tmp_ / "ds", "--trust", tmp_ / "owner.pub"});
  EXPECT_EQ(ok.code, 0);
  EXPECT_NE(ok.out.find("OK"), std::string::npos);
  EXPECT_NE(ok.out.find("not scanned"), std::string::npos);
  EXPECT_EQ(RunCli({"data", "verify", tmp_ / "ds"}).code, 1);  // signed, but no key to check it
  EXPECT_EQ(RunCli({"data", "verify", tmp_ / "ds", "--allow-unsigned"}).code, 0);

  CliResult scan = RunCli({"data", "scan", tmp_ / "ds", "--trust", tmp_ / "owner.pub", "--json"});
  ASSERT_EQ(scan.code, 0) << scan.out;
  auto sj = scan.json();
  EXPECT_EQ(sj["records"], 300);
  EXPECT_EQ(sj["filters"].size(), 5u);
  EXPECT_GT(sj["records_per_second"].get<double>(), 0);
  CliResult text = RunCli({"data", "scan", tmp_ / "ds", "--filters", "schema,exact", "--threshold", "outliers=3"});
  EXPECT_EQ(text.code, 0);
  EXPECT_NE(text.out.find("records/s"), std::string::npos);
  EXPECT_EQ(RunCli({"data", "scan", tmp_ / "ds", "--filters", "bogus"}).code, 1);
  EXPECT_EQ(RunCli({"data", "scan", tmp_ / "ds", "--threshold", "near"}).code, 1);

  CliResult q = RunCli({"data", "quarantine", tmp_ / "ds", "--json", "--limit", "5"});
  ASSERT_EQ(q.code, 0);
  EXPECT_LE(q.json()["count"].get<int>(), 5);
  EXPECT_EQ(RunCli({"data", "quarantine", tmp_ / "ds", "--filter", "schema"}).code, 0);
  EXPECT_NE(RunCli({"data", "quarantine", tmp_ / "ds", "--filter", "nonsense"}).code, 0);

  CliResult v = RunCli({"data", "verify", tmp_ / "ds", "--trust", tmp_ / "owner.pub", "--json"});
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.json()["admitted"].get<int64_t>() + 0, v.json()["admitted"].get<int64_t>());
  EXPECT_NE(v.json()["scan"].get<std::string>().find("admitted"), std::string::npos);
  // Tampering after the fact is caught by verify, by name.
  auto bytes = ReadFile(tmp_ / "ds/shard-00002.rec");
  (*bytes)[70] ^= 1;
  ASSERT_TRUE(WriteFileAtomic(tmp_ / "ds/shard-00002.rec", *bytes).ok());
  EXPECT_EQ(RunCli({"data", "verify", tmp_ / "ds", "--trust", tmp_ / "owner.pub"}).code, 1);
}

// A person releases one copy of a disputed record and confirms the other; the listing
// shows the decisions (verified with --trust) and the JSON carries who, why and key.
TEST_F(CommandsTest, QuarantineReleaseAndConfirmRecordASignedDecision) {
  auto s = testing_util::MakeClusters(3, 100, 16);
  std::copy(s.x.begin(), s.x.begin() + 16, s.x.begin() + 299 * 16);
  s.y[299] = (s.y[0] + 1) % 3;  // record 0's content under another label: 0 and 299 held back
  ASSERT_TRUE(WriteRawRecords(tmp_ / "in.raw", s.x.data(), s.y.data(), s.n(), s.dim).ok());
  ASSERT_EQ(RunCli({"data", "ingest", "--format", "raw", "--input", tmp_ / "in.raw", "--features", "16", "--out",
                    tmp_ / "d", "--sign-key", tmp_ / "owner.key"})
                .code,
            0);
  ASSERT_EQ(RunCli({"data", "scan", tmp_ / "d", "--trust", tmp_ / "owner.pub"}).code, 0);
  ASSERT_TRUE(WriteKeyPair(GenerateKeyPair(), tmp_.path(), "ada").ok());
  ASSERT_TRUE(WriteKeyPair(GenerateKeyPair(), tmp_.path(), "eve").ok());
  std::vector<std::string> base = {"data", "quarantine", tmp_ / "d", "--trust", tmp_ / "owner.pub"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return RunCli(a);
  };
  EXPECT_EQ(with({"--release", "0", "--by", "Ada"}).code, 1);  // no --why, no key
  EXPECT_EQ(with({"--release", "5", "--by", "Ada", "--why", "x", "--sign-key", tmp_ / "ada.key"}).code, 1);
  CliResult r = with({"--release", "0", "--confirm", "299", "--by", "Ada", "--why", "the original photo",
                      "--sign-key", tmp_ / "ada.key"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("review.dsse.json"), std::string::npos) << r.out;
  // Eve cannot extend Ada's overlay without trusting Ada's key.
  EXPECT_EQ(with({"--release", "299", "--by", "Eve", "--why", "y", "--sign-key", tmp_ / "eve.key"}).code, 1);
  CliResult untrusted = with({"--json"});
  EXPECT_EQ(untrusted.code, 1);  // the overlay is not signed by a key given to --trust
  CliResult list = with({"--trust", tmp_ / "ada.pub", "--json"});
  ASSERT_EQ(list.code, 0) << list.out;
  auto j = list.json();
  EXPECT_NE(j["review"].get<std::string>().find("trusted"), std::string::npos);
  std::set<int64_t> seen;  // a record may be listed once per filter that flagged it
  for (const auto& e : j["entries"]) {
    if (e["record_id"] == 0) {
      EXPECT_EQ(e["review"]["action"], "release");
      EXPECT_EQ(e["review"]["by"], "Ada");
      EXPECT_EQ(e["review"]["why"], "the original photo");
      seen.insert(0);
    }
    if (e["record_id"] == 299) {
      EXPECT_EQ(e["review"]["action"], "confirm");
      seen.insert(299);
    }
  }
  EXPECT_EQ(seen.size(), 2u) << list.out;
  CliResult text = with({"--trust", tmp_ / "ada.pub"});
  EXPECT_NE(text.out.find("released"), std::string::npos);
  EXPECT_NE(text.out.find("confirmed"), std::string::npos);
}

TEST_F(CommandsTest, RawAndCsvIngestAndUsageErrors) {
  float rec[2][3] = {{0.1f, 0.2f, 0.3f}, {0.4f, 0.5f, 0.6f}};
  int32_t y[2] = {0, 1};
  ASSERT_TRUE(WriteRawRecords(tmp_ / "in.raw", &rec[0][0], y, 2, 3).ok());
  CliResult raw = RunCli({"data", "ingest", "--format", "raw", "--input", tmp_ / "in.raw", "--features", "3", "--out",
                       tmp_ / "r", "--json"});
  ASSERT_EQ(raw.code, 0) << raw.out;
  EXPECT_EQ(raw.json()["dtype"], "f32");
  EXPECT_EQ(raw.json()["signed"], false);
  ASSERT_TRUE(WriteFileAtomic(tmp_ / "in.csv", "0,1,2\n1,3,4\n").ok());
  EXPECT_EQ(RunCli({"data", "ingest", "--format", "csv", "--input", tmp_ / "in.csv", "--out", tmp_ / "c", "--shape",
                 "2x1", "--value-max", "10"})
                .code,
            0);
  EXPECT_EQ(RunCli({"data", "ingest", "--format", "raw", "--input", tmp_ / "in.raw", "--out", tmp_ / "x"}).code, 1);
  EXPECT_EQ(RunCli({"data", "ingest", "--format", "idx", "--out", tmp_ / "x"}).code, 1);
  EXPECT_NE(RunCli({"data", "ingest", "--format", "parquet", "--out", tmp_ / "x"}).code, 0);
  EXPECT_EQ(RunCli({"data", "ingest", "--format", "csv", "--input", tmp_ / "in.csv", "--out", tmp_ / "x", "--shape",
                 "3x3"})
                .code,
            1);
  EXPECT_EQ(RunCli({"data", "scan", tmp_ / "missing"}).code, 1);
  EXPECT_EQ(RunCli({"data", "quarantine", tmp_ / "r"}).code, 1);  // never scanned
}

}  // namespace
}  // namespace shoal

// The shoalctl checkpoint commands, run in-process with an argv: exit codes, text and
// JSON output, and that a refusal names the bad file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoint/async_writer.h"
#include "checkpoint/cli_test_util.h"
#include "checkpoint/commands.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/test_util.h"
#include "common/file_util.h"

namespace shoal {
namespace {

using testing::MakeSnapshot;
using testing::TempDir;

using Result = testing::CliResult;
Result RunCli(std::vector<std::string> args) { return testing::RunCheckpointCli(std::move(args)); }

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result r = RunCli({"keygen", "--out", tmp_ / "keys", "--name", "ci"});
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_NE(r.out.find("key id"), std::string::npos);
    AsyncCheckpointerOptions o;
    o.job_dir = job_;
    o.sign_key_path = tmp_ / "keys/ci.key";
    auto cp = AsyncCheckpointer::Create(o);
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    ASSERT_TRUE((*cp)->SaveNow(MakeSnapshot(1, 10000, 10)).ok());
    ASSERT_TRUE((*cp)->SaveNow(MakeSnapshot(2, 10000, 20)).ok());
  }
  TempDir tmp_;
  std::string job_ = tmp_ / "job";
  std::string pub_ = tmp_ / "keys/ci.pub";
};

TEST_F(CommandsTest, KeygenRefusesToOverwrite) {
  Result r = RunCli({"keygen", "--out", tmp_ / "keys", "--name", "ci"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("refusing to overwrite"), std::string::npos);
}

// keygen writes the standard PEM forms (common/key_files_test.cc checks them with openssl).
TEST_F(CommandsTest, KeygenWritesPemAndSaysSo) {
  EXPECT_EQ(ReadFile(tmp_ / "keys/ci.key")->rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
  EXPECT_EQ(ReadFile(pub_)->rfind("-----BEGIN PUBLIC KEY-----\n", 0), 0u);
  Result help = RunCli({"keygen", "--help"});
  EXPECT_NE(help.out.find("PKCS#8"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("openssl genpkey -algorithm ed25519"), std::string::npos) << help.out;
}

TEST_F(CommandsTest, VerifyExitCodesAndJson) {
  Result ok = RunCli({"checkpoint", "verify", job_, "--trust", pub_});
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("step-20"), std::string::npos);

  Result untrusted = RunCli({"checkpoint", "verify", job_});
  EXPECT_EQ(untrusted.code, 1);
  EXPECT_NE(untrusted.out.find("--trust"), std::string::npos);  // the hint
  EXPECT_EQ(RunCli({"checkpoint", "verify", job_, "--allow-unsigned"}).code, 0);

  Result via_pointer = RunCli({"checkpoint", "verify", job_ + "/latest", "--trust", pub_});
  EXPECT_EQ(via_pointer.code, 0) << via_pointer.out;
  EXPECT_NE(via_pointer.out.find("step-20"), std::string::npos);

  Result js = RunCli({"checkpoint", "verify", job_ + "/step-10", "--trust", pub_, "--json"});
  auto j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j["valid"], true);
  EXPECT_EQ(j["step"], 10);
  EXPECT_EQ(j["shards"], 1);
  EXPECT_EQ(j["signer"].get<std::string>().size(), 16u);

  std::fstream f(job_ + "/step-20/shard-0-of-1.bin", std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(100);
  f.put('\x42');
  f.close();
  Result bad = RunCli({"checkpoint", "verify", job_, "--trust", pub_, "--json"});
  EXPECT_EQ(bad.code, 1);
  j = nlohmann::json::parse(bad.out);
  EXPECT_EQ(j["valid"], false);
  EXPECT_NE(j["error"].get<std::string>().find("shard-0-of-1.bin"), std::string::npos);

  EXPECT_EQ(RunCli({"checkpoint", "verify", job_, "--trust", tmp_ / "nope.pub"}).code, 2);
  EXPECT_NE(RunCli({"checkpoint", "verify"}).code, 0);  // usage error from CLI11
}

TEST_F(CommandsTest, ListShowsEveryStep) {
  Result r = RunCli({"checkpoint", "list", job_, "--trust", pub_});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("(latest)"), std::string::npos);
  Result js = RunCli({"checkpoint", "list", job_, "--trust", pub_, "--json"});
  auto j = nlohmann::json::parse(js.out);
  ASSERT_EQ(j["checkpoints"].size(), 2u);
  EXPECT_EQ(j["checkpoints"][0]["step"], 10);
  EXPECT_EQ(j["checkpoints"][1]["latest"], true);
  EXPECT_EQ(j["checkpoints"][1]["verified"], true);
  EXPECT_EQ(j["checkpoints"][1]["bytes"].get<uint64_t>(), 10000u);
  ::unlink((job_ + "/step-10/manifest.sig").c_str());
  EXPECT_EQ(RunCli({"checkpoint", "list", job_, "--trust", pub_}).code, 1);
  j = nlohmann::json::parse(RunCli({"checkpoint", "list", job_, "--trust", pub_, "--json"}).out);
  EXPECT_EQ(j["checkpoints"][0]["verified"], false);
  EXPECT_NE(j["checkpoints"][0]["error"].get<std::string>().find("manifest.sig"), std::string::npos);
  EXPECT_GT(j["checkpoints"][0]["bytes"].get<uint64_t>(), 10000u);  // its files on disk, manifest included
}

TEST_F(CommandsTest, ExportWritesSafetensors) {
  const std::string out = tmp_ / "w.safetensors";
  Result r = RunCli({"checkpoint", "export", job_, "--safetensors", out, "--trust", pub_});
  EXPECT_EQ(r.code, 0) << r.err;
  auto parsed = ReadSafetensors(out);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->metadata.at("shoal.step"), "20");
  Result js = RunCli({"checkpoint", "export", job_ + "/step-10", "--safetensors", out, "--trust", pub_, "--json"});
  ASSERT_EQ(js.code, 0) << js.err;
  auto j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j["step"], 10);
  EXPECT_EQ(j["tensors"].get<size_t>(), ReadSafetensors(out)->tensors.size());
  EXPECT_EQ(j["bytes"].get<uint64_t>(), std::filesystem::file_size(out));
  Result refused = RunCli({"checkpoint", "export", job_, "--safetensors", tmp_ / "x.safetensors"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_FALSE(PathExists(tmp_ / "x.safetensors"));
}

}  // namespace
}  // namespace shoal

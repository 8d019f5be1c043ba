// Tests for common/: status plumbing, SHA-256 vectors, key files and DSSE signing.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "common/file_util.h"
#include "common/host_usage.h"
#include "common/sha256.h"
#include "common/signing.h"
#include "common/status.h"
#include "common/stream_copy.h"

namespace shoal {
namespace {

StatusOr<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd");
  return x / 2;
}
Status UseHalf(int x, int* out) {
  ASSIGN_OR_RETURN(*out, Half(x));
  return OkStatus();
}

TEST(Status, PropagatesThroughMacros) {
  int v = 0;
  EXPECT_TRUE(UseHalf(4, &v).ok());
  EXPECT_EQ(v, 2);
  Status s = UseHalf(3, &v);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.WithContext("ctx").ToString(), "INVALID_ARGUMENT: ctx: odd");
}

// Every offset of source and destination within a cache line, lengths around the
// 128-byte loop and the alignment head, and a large copy: byte for byte, and nothing
// written past the end.
TEST(StreamingCopy, CopiesExactlyAtAnyAlignmentAndLength) {
  std::vector<char> src(5000), dst(5100);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i * 131 + 7);
  for (size_t soff : {0, 1, 31}) {
    for (size_t doff = 0; doff < 64; doff += 3) {
      for (size_t n : {0, 1, 31, 32, 127, 128, 129, 255, 4000}) {
        std::fill(dst.begin(), dst.end(), 'x');
        StreamingCopy(dst.data() + doff, src.data() + soff, n);
        ASSERT_TRUE(std::equal(src.begin() + soff, src.begin() + soff + n, dst.begin() + doff)) << soff << " " << doff << " " << n;
        ASSERT_EQ(dst[doff + n], 'x') << "wrote past the end: " << doff << " " << n;
        if (doff > 0) ASSERT_EQ(dst[doff - 1], 'x');
      }
    }
  }
  std::vector<char> big(9 << 20), copy(big.size() + 5);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i ^ (i >> 9));
  StreamingCopy(copy.data() + 5, big.data(), big.size());
  EXPECT_TRUE(std::equal(big.begin(), big.end(), copy.begin() + 5));
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  EXPECT_EQ(ToHex(h.Finish()), Sha256Hex("abc"));
  EXPECT_EQ(*FromHex("00ff10"), std::string("\x00\xff\x10", 3));
  EXPECT_FALSE(FromHex("0g").ok());
}

class SigningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("shoal-sign-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(SigningTest, KeyFilesRoundTripAndRefuseLooseModes) {
  KeyPair kp = GenerateKeyPair();
  ASSERT_TRUE(WriteKeyPair(kp, dir_).ok());
  EXPECT_EQ(WriteKeyPair(kp, dir_).code(), StatusCode::kAlreadyExists);
  auto sk = LoadSecretKey((dir_ / "shoal.key").string());
  ASSERT_TRUE(sk.ok()) << sk.status().ToString();
  EXPECT_EQ(sk->public_key.key_id, kp.public_key.key_id);
  auto pk = LoadPublicKey((dir_ / "shoal.pub").string());
  ASSERT_TRUE(pk.ok());
  EXPECT_EQ(pk->bytes, kp.public_key.bytes);
  ::chmod((dir_ / "shoal.key").c_str(), 0644);
  auto loose = LoadSecretKey((dir_ / "shoal.key").string());
  EXPECT_EQ(loose.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(loose.status().message().find("chmod 600"), std::string::npos);
}

TEST(Signing, DsseSignVerifyAndTamper) {
  KeyPair kp = GenerateKeyPair(), other = GenerateKeyPair();
  std::string stmt = MakeStatement({{"manifest.pb", std::string(64, 'a')}}, "https://shoal.dev/checkpoint/v1");
  std::string env = SignDsse(kInTotoPayloadType, stmt, kp);
  TrustStore trust;
  trust.Add(kp.public_key);
  auto ok = VerifyDsse(env, trust);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->payload, stmt);
  auto subjects = ParseStatementSubjects(ok->payload);
  ASSERT_TRUE(subjects.ok());
  EXPECT_EQ(subjects->at("manifest.pb"), std::string(64, 'a'));

  TrustStore wrong;
  wrong.Add(other.public_key);
  EXPECT_EQ(VerifyDsse(env, wrong).status().code(), StatusCode::kPermissionDenied);

  // Re-sign a different payload with the other key under the trusted key's id: refused.
  std::string forged = SignDsse(kInTotoPayloadType, stmt + " ", other);
  auto pos = forged.find(other.public_key.key_id);
  forged.replace(pos, other.public_key.key_id.size(), kp.public_key.key_id);
  EXPECT_EQ(VerifyDsse(forged, trust).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(VerifyDsse("{not json", trust).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(VerifyDsse("{}", trust).status().code(), StatusCode::kInvalidArgument);
}

TEST(FileUtil, AtomicWriteReplacesContent) {
  std::string path = (std::filesystem::temp_directory_path() / ("shoal-fu-" + std::to_string(::getpid()))).string();
  ASSERT_TRUE(WriteFileAtomic(path, "one").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "two").ok());
  EXPECT_EQ(*ReadFile(path), "two");
  EXPECT_EQ(ReadFile(path + ".missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*ReadFile(path, 3), "two");  // exactly at the limit
  auto capped = ReadFile(path, 2);
  EXPECT_EQ(capped.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(capped.status().message().find(path), std::string::npos);
  std::filesystem::remove(path);
  // A directory where a file was expected is the caller's mistake, said as such.
  auto dir = ReadFile(std::filesystem::temp_directory_path().string());
  EXPECT_EQ(dir.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dir.status().message().find("is a directory"), std::string::npos) << dir.status().ToString();
}

}  // namespace
}  // namespace shoal

namespace shoal {
namespace {

TEST(HostUsage, ProcessCpuTimeAndMemoryAreRead) {
  const ProcessUsage before = ReadProcessUsage();
  volatile double x = 0;
  for (int i = 0; i < 20'000'000; ++i) x = x + i * 1e-9;
  const ProcessUsage after = ReadProcessUsage();
  EXPECT_GT(after.cpu_seconds, before.cpu_seconds);
  EXPECT_GT(after.rss_bytes, 1 << 20);
}

// A powercap tree of our own: one package (its core sub-domain must not count twice),
// a counter that wraps, and the share of the host's busy time this process had.
TEST(HostUsage, RaplPackageEnergyIsAttributedByCpuShareAcrossAWrap) {
  const std::string root = std::filesystem::temp_directory_path() / ("rapl-" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root + "/intel-rapl:0");
  std::filesystem::create_directories(root + "/intel-rapl:0:0");
  auto write = [](const std::string& path, const std::string& text) { ASSERT_TRUE(WriteFileAtomic(path, text).ok()); };
  write(root + "/intel-rapl:0/energy_uj", "1000000\n");
  write(root + "/intel-rapl:0/max_energy_range_uj", "2000000\n");
  write(root + "/intel-rapl:0:0/energy_uj", "5\n");
  const long hz = ::sysconf(_SC_CLK_TCK);
  write(root + "/stat", "cpu  " + std::to_string(hz) + " 0 " + std::to_string(hz) + " 500 0 0 0 0 0 0\n");
  auto meter = RaplMeter::Open(root, root + "/stat", 0.0);
  ASSERT_NE(meter, nullptr);
  // 1.5 J later (across the wrap at 2 J) the host was busy 2 more CPU-seconds, 1 of them ours.
  write(root + "/intel-rapl:0/energy_uj", "500000\n");
  write(root + "/intel-rapl:0:0/energy_uj", "999999\n");
  write(root + "/stat", "cpu  " + std::to_string(2 * hz) + " 0 " + std::to_string(2 * hz) + " 900 0 0 0 0 0 0\n");
  EXPECT_NEAR(meter->Sample(1.0), 0.75, 1e-9);
  EXPECT_NEAR(meter->package_joules(), 1.5, 1e-9);
  EXPECT_EQ(RaplMeter::Open(root + "/absent", root + "/stat"), nullptr) << "no RAPL: energy unknown, not 0";
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace shoal

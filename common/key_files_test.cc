// Keys other tools can read: Shoal's key files are the PEM that openssl writes, a DSSE
// signature made by Shoal verifies with the openssl command-line tool and no Shoal code,
// and a key made by openssl signs what Shoal verifies. The older Shoal text form still
// loads. Tests that need the openssl binary skip, saying so, where it is absent.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/file_util.h"
#include "common/sha256.h"
#include "common/signing.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;

// The openssl binary on PATH, or "".
std::string FindOpenssl() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    std::string candidate = (d.empty() ? "." : d) + "/openssl";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

struct Ran {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `command` through the shell; every argument the tests pass is a temp path
// without spaces or quotes.
Ran Shell(const std::string& command) {
  Ran r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) r.output.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string ReadAll(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : "";
}

// The raw signature out of a single-signature envelope, and its PAE: what was signed.
struct Signed {
  std::string pae;
  std::string sig;
};
Signed Unwrap(const std::string& envelope) {
  auto j = nlohmann::json::parse(envelope);
  auto payload = Base64Decode(j["payload"].get<std::string>());
  auto sig = Base64Decode(j["signatures"][0]["sig"].get<std::string>());
  EXPECT_TRUE(payload.ok() && sig.ok());
  return {DssePae(j["payloadType"].get<std::string>(), payload.ok() ? *payload : ""), sig.ok() ? *sig : ""};
}

class KeyFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("shoal-keys-" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    openssl_ = FindOpenssl();
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  // `openssl pkeyutl -verify` of `pae` with `sig` against the public key file `pub`.
  Ran OpensslVerify(const std::string& pub, const std::string& pae, const std::string& sig) {
    WriteBytes(Path("pae.bin"), pae);
    WriteBytes(Path("sig.bin"), sig);
    return Shell(openssl_ + " pkeyutl -verify -pubin -inkey " + pub + " -rawin -in " + Path("pae.bin") + " -sigfile " +
               Path("sig.bin"));
  }
  std::string dir_, openssl_;
};

TEST_F(KeyFilesTest, WritesPemAndReadsItBack) {
  KeyPair kp = GenerateKeyPair();
  ASSERT_TRUE(WriteKeyPair(kp, dir_, "k").ok());
  const std::string sk = ReadAll(Path("k.key")), pk = ReadAll(Path("k.pub"));
  EXPECT_EQ(sk.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u) << sk;
  EXPECT_NE(sk.find("-----END PRIVATE KEY-----\n"), std::string::npos);
  EXPECT_EQ(pk.rfind("-----BEGIN PUBLIC KEY-----\n", 0), 0u) << pk;
  struct stat st;
  ASSERT_EQ(::stat(Path("k.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto secret = LoadSecretKey(Path("k.key"));
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  EXPECT_EQ(secret->secret, kp.secret);  // seed || public, rebuilt from the PKCS#8 seed
  EXPECT_EQ(secret->public_key.key_id, kp.public_key.key_id);
  auto pub = LoadPublicKey(Path("k.pub"));
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(pub->bytes, kp.public_key.bytes);
  EXPECT_EQ(pub->key_id, kp.public_key.key_id);
}

// Keys written before PEM (the "shoal-ed25519-* v1" text form) still load, with the same
// key ids, so existing trust stores and signatures stay valid.
TEST_F(KeyFilesTest, TheOlderShoalFormStillLoads) {
  KeyPair kp = GenerateKeyPair();
  WriteBytes(Path("old.key"), "shoal-ed25519-secret v1\n" + ToHex(kp.secret.data(), kp.secret.size()) + "\n");
  ::chmod(Path("old.key").c_str(), 0600);
  WriteBytes(Path("old.pub"), "shoal-ed25519-public v1\n" + ToHex(kp.public_key.bytes.data(), 32) + "\n");
  auto secret = LoadSecretKey(Path("old.key"));
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  EXPECT_EQ(secret->secret, kp.secret);
  auto pub = LoadPublicKey(Path("old.pub"));
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(pub->key_id, kp.public_key.key_id);

  // A signature by the old file verifies against the new file of the same key.
  ASSERT_TRUE(WriteKeyPair(kp, dir_, "new").ok());
  TrustStore trust;
  ASSERT_TRUE(trust.AddFile(Path("new.pub")).ok());
  EXPECT_TRUE(VerifyDsse(SignDsse("text/plain", "hello", *secret), trust).ok());
}

TEST_F(KeyFilesTest, RefusesWhatIsNotAnEd25519KeyOfTheRightHalf) {
  KeyPair kp = GenerateKeyPair();
  ASSERT_TRUE(WriteKeyPair(kp, dir_, "k").ok());
  auto pub_as_secret = ParseSecretKey(ReadAll(Path("k.pub")), "k.pub");
  EXPECT_EQ(pub_as_secret.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(pub_as_secret.status().message().find("holds a public key"), std::string::npos)
      << pub_as_secret.status().message();
  auto secret_as_pub = ParsePublicKey(ReadAll(Path("k.key")), "k.key");
  EXPECT_NE(secret_as_pub.status().message().find("holds a secret key"), std::string::npos)
      << secret_as_pub.status().message();
  auto garbage = ParsePublicKey("ssh-ed25519 AAAA...\n", "id.pub");
  EXPECT_EQ(garbage.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(garbage.status().message().find("BEGIN PUBLIC KEY"), std::string::npos) << garbage.status().message();
  EXPECT_NE(garbage.status().message().find("shoal-ed25519-public v1"), std::string::npos);
  auto broken = ParsePublicKey("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n", "bad.pub");
  EXPECT_EQ(broken.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(broken.status().message().find("bad.pub"), std::string::npos);

  if (openssl_.empty()) GTEST_SKIP() << "no openssl binary on PATH: the X25519 key cannot be made";
  // X25519 shares Ed25519's curve and key size: the likeliest wrong key to be handed.
  ASSERT_EQ(Shell(openssl_ + " genpkey -algorithm x25519 -out " + Path("x.key")).exit_code, 0);
  auto x = ParseSecretKey(ReadAll(Path("x.key")), "x.key");
  EXPECT_EQ(x.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(x.status().message().find("X25519"), std::string::npos) << x.status().message();
}

// What `openssl genpkey` / `openssl pkey -pubout` write is byte for byte what Shoal writes:
// openssl re-reading Shoal's files and writing them out again changes nothing.
TEST_F(KeyFilesTest, ShoalsPemIsWhatOpensslWrites) {
  if (openssl_.empty()) GTEST_SKIP() << "no openssl binary on PATH";
  ASSERT_TRUE(WriteKeyPair(GenerateKeyPair(), dir_, "k").ok());
  Ran secret = Shell(openssl_ + " pkey -in " + Path("k.key"));
  ASSERT_EQ(secret.exit_code, 0) << secret.output;
  EXPECT_EQ(secret.output, ReadAll(Path("k.key")));
  Ran pub = Shell(openssl_ + " pkey -in " + Path("k.key") + " -pubout");
  ASSERT_EQ(pub.exit_code, 0) << pub.output;
  EXPECT_EQ(pub.output, ReadAll(Path("k.pub")));
  Ran text = Shell(openssl_ + " pkey -pubin -in " + Path("k.pub") + " -noout -text");
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("ED25519 Public-Key"), std::string::npos) << text.output;
}

// A DSSE envelope signed by Shoal, checked by openssl alone: the PAE bytes ("DSSEv1" SP
// len(type) SP type SP len(body) SP body) and the raw signature go to files, and
// `openssl pkeyutl -verify -rawin` checks them against the PEM public key. A flipped
// byte in either is refused.
TEST_F(KeyFilesTest, OpensslVerifiesAShoalDsseSignature) {
  if (openssl_.empty()) GTEST_SKIP() << "no openssl binary on PATH";
  KeyPair kp = GenerateKeyPair();
  ASSERT_TRUE(WriteKeyPair(kp, dir_, "signer").ok());
  auto key = LoadSecretKey(Path("signer.key"));
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  const std::string statement =
      MakeStatement({{"manifest.pb", std::string(64, 'a')}, {"shard-0-of-1.bin", std::string(64, 'b')}},
                    "https://shoal.dev/checkpoint/v1");
  Signed s = Unwrap(SignDsse(kInTotoPayloadType, statement, *key));
  ASSERT_EQ(s.sig.size(), 64u);
  // The PAE spelled out here, not through DssePae, so the test states the format.
  ASSERT_EQ(s.pae, "DSSEv1 " + std::to_string(std::string(kInTotoPayloadType).size()) + " " + kInTotoPayloadType + " " +
                       std::to_string(statement.size()) + " " + statement);

  Ran ok = OpensslVerify(Path("signer.pub"), s.pae, s.sig);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("Signature Verified Successfully"), std::string::npos) << ok.output;

  std::string pae = s.pae;
  pae[pae.size() / 2] ^= 0x01;
  Ran bad_body = OpensslVerify(Path("signer.pub"), pae, s.sig);
  EXPECT_NE(bad_body.exit_code, 0) << bad_body.output;
  EXPECT_EQ(bad_body.output.find("Signature Verified Successfully"), std::string::npos) << bad_body.output;

  std::string sig = s.sig;
  sig[10] ^= 0x80;
  Ran bad_sig = OpensslVerify(Path("signer.pub"), s.pae, sig);
  EXPECT_NE(bad_sig.exit_code, 0) << bad_sig.output;
  EXPECT_EQ(bad_sig.output.find("Signature Verified Successfully"), std::string::npos) << bad_sig.output;

  // Another key's public half does not verify it either.
  ASSERT_TRUE(WriteKeyPair(GenerateKeyPair(), dir_, "other").ok());
  EXPECT_NE(OpensslVerify(Path("other.pub"), s.pae, s.sig).exit_code, 0);
}

// A key made by openssl, not by Shoal, signs in Shoal; Shoal verifies it against the
// public half that openssl wrote, and so does openssl.
TEST_F(KeyFilesTest, AKeyMadeByOpensslSignsWhatShoalVerifies) {
  if (openssl_.empty()) GTEST_SKIP() << "no openssl binary on PATH";
  Ran gen = Shell(openssl_ + " genpkey -algorithm ed25519 -out " + Path("ossl.key"));
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  ::chmod(Path("ossl.key").c_str(), 0600);  // what Shoal demands of any secret key file
  Ran pub = Shell(openssl_ + " pkey -in " + Path("ossl.key") + " -pubout -out " + Path("ossl.pub"));
  ASSERT_EQ(pub.exit_code, 0) << pub.output;

  auto key = LoadSecretKey(Path("ossl.key"));
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  TrustStore trust;
  ASSERT_TRUE(trust.AddFile(Path("ossl.pub")).ok());
  const std::string envelope = SignDsse(kInTotoPayloadType, MakeStatement({}, "https://example.com/p"), *key);
  auto verified = VerifyDsse(envelope, trust);
  ASSERT_TRUE(verified.ok()) << verified.status().ToString();
  EXPECT_EQ(verified->key_id, key->public_key.key_id);
  Signed s = Unwrap(envelope);
  Ran check = OpensslVerify(Path("ossl.pub"), s.pae, s.sig);
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("Signature Verified Successfully"), std::string::npos) << check.output;

  // The permissions rule holds for PEM keys too.
  ::chmod(Path("ossl.key").c_str(), 0644);
  EXPECT_EQ(LoadSecretKey(Path("ossl.key")).status().code(), StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace shoal

// Tampering: 1,000 random mutations (fixed seed) of a signed 3-shard checkpoint of 64 KiB
// with three rank-state files: bit flips in shards, rank states, manifest and signature, truncation and extension, shards swapped
// in from another checkpoint, re-signing by an untrusted key, garbled signatures, missing,
// renamed and extra files. Every one must be refused with a message naming a file it
// touched; the fresh copy made before each mutation must always be accepted.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "checkpoint/reader.h"
#include "checkpoint/test_util.h"
#include "checkpoint/writer.h"
#include "common/file_util.h"
#include "common/sha256.h"
#include "common/signing.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;
using testing::MakeSnapshot;
using testing::TempDir;

constexpr int kMutations = 1000;
constexpr int kWorld = 3;

// Every rank writes its slice and a rank-state file of its own (as a codec's residuals).
void Save(const std::string& job, uint64_t seed, const KeyPair& key) {
  TrainerSnapshot snap = MakeSnapshot(seed, 64 << 10, 100);
  snap.world_size = kWorld;
  auto ser = SerializeSnapshot(snap);
  ASSERT_TRUE(ser.ok());
  std::vector<ShardInfo> shards;
  for (int r = 0; r < kWorld; ++r) {
    const std::string staging = StagingPath(job, 100, "t");
    ByteRange b = SliceForRank(ser->bytes.size(), r, kWorld);
    auto info = WriteShard(staging, r, kWorld, std::string_view(ser->bytes).substr(b.begin, b.size()));
    ASSERT_TRUE(info.ok());
    auto state = WriteRankState(staging, r, kWorld, {testing::MakeRankState(seed, r, 4000 + 100 * r)});
    ASSERT_TRUE(state.ok());
    info->rank_state = *state;
    shards.push_back(*info);
  }
  ASSERT_TRUE(CommitCheckpoint(job, 100, ser->manifest, shards, &key).ok());
}

std::string Read(const std::string& p) { return *ReadFile(p); }
// Plain writes: durability is not under test here, and fsync would dominate the run time.
void Write(const std::string& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
  ASSERT_TRUE(f.good()) << p;
}

class Mutator {
 public:
  Mutator(std::mt19937_64* rng, const std::string& other_dir, const KeyPair& untrusted)
      : rng_(*rng), other_(other_dir), untrusted_(untrusted) {}

  // Applies mutation `kind` to `dir`; returns the file names a refusal may name.
  std::vector<std::string> Apply(int kind, const std::string& dir) {
    // Any data file: a shard or a rank state.
    const size_t file = Pick(2 * kWorld);
    std::string shard = file < kWorld ? ShardFileName(static_cast<int>(file), kWorld)
                                      : RankStateFileName(static_cast<int>(file - kWorld), kWorld);
    auto at = [&](const std::string& f) { return dir + "/" + f; };
    switch (kind) {
      case 0: FlipBit(at(shard)); return {shard};
      case 1: FlipBit(at(kManifestFile)); return {kManifestFile};
      case 2: FlipBit(at(kSignatureFile)); return {kSignatureFile};
      case 3: {  // truncation
        std::string b = Read(at(shard));
        Write(at(shard), b.substr(0, Pick(b.size())));
        return {shard};
      }
      case 4: fs::copy_file(other_ + "/" + shard, at(shard), fs::copy_options::overwrite_existing); return {shard};
      case 5: {  // the same statement, signed by a key nobody trusts
        auto env = ParseDsseUnverified(Read(at(kSignatureFile)));
        Write(at(kSignatureFile), SignDsse(env->payload_type, env->payload, untrusted_));
        return {kSignatureFile};
      }
      case 6: Write(at(kSignatureFile), RandomBytes(Pick(300))); return {kSignatureFile};
      case 7: {  // a well-formed envelope whose signature bytes are random
        auto env = ParseDsseUnverified(Read(at(kSignatureFile)));
        std::string sig = SignDsse(env->payload_type, env->payload, untrusted_);
        std::string keyid = untrusted_.public_key.key_id, trusted_id = TrustedKeyId(Read(at(kSignatureFile)));
        sig.replace(sig.find(keyid), keyid.size(), trusted_id);
        size_t p = sig.find("\"sig\": \"") + 8;
        sig.replace(p, sig.find('"', p) - p, Base64Encode(RandomBytes(64)));
        Write(at(kSignatureFile), sig);
        return {kSignatureFile};
      }
      case 8: {
        std::vector<std::string> files{kManifestFile, kSignatureFile, shard};
        std::string victim = files[Pick(files.size())];
        fs::remove(at(victim));
        return {victim};
      }
      case 9: fs::rename(at(shard), at(shard + ".renamed")); return {shard, shard + ".renamed"};
      case 10: Write(at("extra-" + std::to_string(Pick(1000))), RandomBytes(Pick(100))); return {"extra-"};
      case 11: Write(at(shard), Read(at(shard)) + RandomBytes(1 + Pick(64))); return {shard};
      case 12: {  // edit the manifest and re-sign it with an untrusted key
        CheckpointManifest m = *ParseManifest(Read(at(kManifestFile)));
        m.set_step(m.step() + 1);
        std::string bytes = SerializeManifest(m);
        Write(at(kManifestFile), bytes);
        Write(at(kSignatureFile), SignDsse(kInTotoPayloadType, MakeCheckpointStatement(m, Sha256Hex(bytes)), untrusted_));
        return {kSignatureFile};
      }
      case 13: {  // edit the manifest, keep the old signature
        CheckpointManifest m = *ParseManifest(Read(at(kManifestFile)));
        m.set_cursor(m.cursor() + 1 + Pick(1000));
        Write(at(kManifestFile), SerializeManifest(m));
        return {kManifestFile};
      }
      case 14: {  // swap two shards' contents
        std::string a = ShardFileName(0, kWorld), b = ShardFileName(1 + Pick(kWorld - 1), kWorld);
        std::string ba = Read(at(a)), bb = Read(at(b));
        Write(at(a), bb);
        Write(at(b), ba);
        return {a, b};
      }
      default: {  // manifest and signature of another valid checkpoint, our shards
        fs::copy_file(other_ + "/" + kManifestFile, at(kManifestFile), fs::copy_options::overwrite_existing);
        fs::copy_file(other_ + "/" + kSignatureFile, at(kSignatureFile), fs::copy_options::overwrite_existing);
        return {"shard-"};
      }
    }
  }
  static constexpr int kKinds = 16;

 private:
  size_t Pick(size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  std::string RandomBytes(size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(Pick(256));
    return s;
  }
  void FlipBit(const std::string& path) {
    std::string b = Read(path);
    ASSERT_FALSE(b.empty());
    b[Pick(b.size())] ^= static_cast<char>(1u << Pick(8));
    Write(path, b);
  }
  static std::string TrustedKeyId(const std::string& envelope) {
    size_t p = envelope.find("\"keyid\": \"") + 10;
    return envelope.substr(p, 16);
  }

  std::mt19937_64& rng_;
  std::string other_;
  KeyPair untrusted_;
};

TEST(Tamper, EveryMutationIsRefusedAndNamesTheFile) {
  TempDir tmp("tamper");
  KeyPair key = GenerateKeyPair(), untrusted = GenerateKeyPair();
  TrustStore trust;
  trust.Add(key.public_key);
  Save(tmp / "clean", 1, key);
  Save(tmp / "other", 2, key);  // validly signed, different bytes, same shapes
  const std::string clean = tmp / "clean/step-100", other = tmp / "other/step-100";
  ASSERT_TRUE(LoadCheckpoint(clean, trust, false).ok());

  std::mt19937_64 rng(1234);
  Mutator mutator(&rng, other, untrusted);
  std::map<int, int> per_kind;
  std::map<StatusCode, int> per_code;
  for (int i = 0; i < kMutations; ++i) {
    const std::string dir = tmp / "work/step-100";
    fs::remove_all(tmp / "work");
    fs::create_directories(tmp / "work");
    fs::copy(clean, dir, fs::copy_options::recursive);
    auto fresh = LoadCheckpoint(dir, trust, false);
    ASSERT_TRUE(fresh.ok()) << "clean copy refused at iteration " << i << ": " << fresh.status().ToString();

    const int kind = static_cast<int>(rng() % Mutator::kKinds);
    std::vector<std::string> names = mutator.Apply(kind, dir);
    ++per_kind[kind];
    auto r = LoadCheckpoint(dir, trust, /*allow_unsigned=*/false);
    ASSERT_FALSE(r.ok()) << "mutation " << i << " (kind " << kind << ") was accepted";
    const Status& s = r.status();
    ++per_code[s.code()];
    EXPECT_TRUE(s.code() == StatusCode::kPermissionDenied || s.code() == StatusCode::kDataLoss ||
                s.code() == StatusCode::kInvalidArgument)
        << s.ToString();
    bool named = false;
    for (const auto& n : names) named |= s.message().find(n) != std::string::npos;
    EXPECT_TRUE(named) << "kind " << kind << ": '" << s.message() << "' names none of the touched files";
  }
  for (auto [kind, n] : per_kind) EXPECT_GT(n, 20) << "kind " << kind << " barely exercised";
  std::printf("tamper: %d mutations refused: %d permission denied, %d data loss, %d invalid argument\n", kMutations,
              per_code[StatusCode::kPermissionDenied], per_code[StatusCode::kDataLoss],
              per_code[StatusCode::kInvalidArgument]);
}

// Signature-related refusals are waived by allow_unsigned; digest ones never are.
TEST(Tamper, AllowUnsignedStillChecksDigests) {
  TempDir tmp("tamper");
  KeyPair key = GenerateKeyPair();
  Save(tmp / "clean", 1, key);
  const std::string dir = tmp / "clean/step-100";
  TrustStore nobody;
  ASSERT_TRUE(LoadCheckpoint(dir, nobody, true).ok());
  Write(dir + "/manifest.sig", "garbage");
  ASSERT_TRUE(LoadCheckpoint(dir, nobody, true).ok());
  std::string b = Read(dir + "/shard-1-of-3.bin");
  b[7] ^= 1;
  Write(dir + "/shard-1-of-3.bin", b);
  auto r = LoadCheckpoint(dir, nobody, true);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("shard-1-of-3.bin"), std::string::npos);
}

}  // namespace
}  // namespace shoal

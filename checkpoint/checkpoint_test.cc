// Save/load tests: bit-exact round trips, multi-rank writes with ranks as threads (W=1..4,
// including an empty state), lineage fields in the manifest, asynchronous saves and
// their callback, keys and unsigned checkpoints.
#include <gtest/gtest.h>
#include <unistd.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "checkpoint/async_writer.h"
#include "checkpoint/reader.h"
#include "checkpoint/test_util.h"
#include "checkpoint/writer.h"
#include "common/file_util.h"
#include "common/sha256.h"

namespace shoal {
namespace {

using testing::MakeSnapshot;
using testing::TempDir;
using testing::ThreadAllgather;

void ExpectSameState(const TrainerSnapshot& a, const TrainerSnapshot& b) {
  EXPECT_EQ(a.job_id, b.job_id);
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.cursor, b.cursor);
  EXPECT_EQ(a.rng_state, b.rng_state);
  EXPECT_EQ(a.spec_digest, b.spec_digest);
  EXPECT_EQ(a.codec, b.codec);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].name, b.tensors[i].name);
    EXPECT_EQ(a.tensors[i].dtype, b.tensors[i].dtype);
    EXPECT_EQ(a.tensors[i].shape, b.tensors[i].shape);
    EXPECT_TRUE(a.tensors[i].bytes == b.tensors[i].bytes) << a.tensors[i].name << " differs";
  }
}

struct Keys {
  KeyPair key = GenerateKeyPair();
  TrustStore trust;
  Keys() { trust.Add(key.public_key); }
};

TEST(Checkpoint, RoundTripIsBitExact) {
  TempDir tmp;
  Keys k;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  o.key = k.key;
  auto cp = AsyncCheckpointer::Create(o);
  ASSERT_TRUE(cp.ok());
  TrainerSnapshot snap = MakeSnapshot(7, 300000, 120);
  ASSERT_TRUE((*cp)->SaveNow(snap).ok());
  auto loaded = LoadCheckpoint(o.job_dir, k.trust, /*allow_unsigned=*/false);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->dir, o.job_dir + "/step-120");
  EXPECT_TRUE(loaded->signature_verified);
  EXPECT_EQ(loaded->signer_key_id, k.key.public_key.key_id);
  EXPECT_EQ(loaded->manifest_digest, *Sha256FileHex(loaded->dir + "/manifest.pb"));
  ExpectSameState(snap, loaded->snapshot);
  auto verified = VerifyCheckpoint(o.job_dir + "/step-120", k.trust, false);
  ASSERT_TRUE(verified.ok());
  EXPECT_TRUE(verified->snapshot.tensors.empty());
  EXPECT_EQ(verified->manifest_digest, loaded->manifest_digest);
}

// Ranks as threads: each serializes the same replicated state, writes its slice, joins
// the allgather; rank 0 commits. `own_state(r, snap)` may give rank r rank tensors of its
// own. Then load (at "any world size": loading is global).
using OwnState = std::function<void(int rank, TrainerSnapshot* snap)>;
std::vector<Status> TrySaveMultiRank(const std::string& job, int world, const TrainerSnapshot& snap,
                                     const KeyPair& key, const OwnState& own_state = nullptr) {
  ThreadAllgather gather(world);
  std::vector<std::thread> ranks;
  std::vector<Status> results(world);
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      AsyncCheckpointerOptions o;
      o.job_dir = job;
      o.key = key;
      o.rank = r;
      o.world = world;
      o.is_leader = r == 0;
      o.nonce = "run1";
      o.gather = [&](const ShardInfo& mine) { return gather.Gather(mine); };
      auto cp = AsyncCheckpointer::Create(o);
      if (!cp.ok()) {
        results[r] = cp.status();
        return;
      }
      TrainerSnapshot mine = snap;
      if (own_state) own_state(r, &mine);
      results[r] = (*cp)->SaveAsync(mine);
      if (results[r].ok()) results[r] = (*cp)->Wait();
    });
  }
  for (auto& t : ranks) t.join();
  return results;
}

void SaveMultiRank(const std::string& job, int world, const TrainerSnapshot& snap, const KeyPair& key,
                   const OwnState& own_state = nullptr) {
  std::vector<Status> results = TrySaveMultiRank(job, world, snap, key, own_state);
  for (int r = 0; r < world; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].ToString();
}

// Rank r's codec state: its own size and bytes.
NamedTensor RankState(int r) { return testing::MakeRankState(100, r, 1000 + 37 * r); }

// Per-rank state needs no exchange: each rank writes its own file; the loaded snapshot
// holds every rank's, in rank order, and the signed statement covers each file.
TEST(Checkpoint, EveryRankWritesItsOwnRankState) {
  Keys k;
  for (int world = 1; world <= 4; ++world) {
    TempDir tmp;
    TrainerSnapshot snap = MakeSnapshot(world, 50000, 30);
    snap.world_size = world;
    SaveMultiRank(tmp / "job", world, snap, k.key, [](int r, TrainerSnapshot* s) { s->rank_tensors = {RankState(r)}; });
    auto loaded = LoadCheckpoint(tmp / "job", k.trust, false);
    ASSERT_TRUE(loaded.ok()) << "world " << world << ": " << loaded.status().ToString();
    ExpectSameState(snap, loaded->snapshot);
    ASSERT_EQ(loaded->manifest.rank_states_size(), world);
    ASSERT_EQ(loaded->snapshot.rank_tensors.size(), static_cast<size_t>(world));
    for (int r = 0; r < world; ++r) {
      const NamedTensor want = RankState(r);
      EXPECT_EQ(loaded->snapshot.rank_tensors[r].name, want.name);
      EXPECT_EQ(loaded->snapshot.rank_tensors[r].shape, want.shape);
      EXPECT_TRUE(loaded->snapshot.rank_tensors[r].bytes == want.bytes) << "rank " << r;
      EXPECT_EQ(loaded->manifest.rank_states(r).file(), RankStateFileName(r, world));
      EXPECT_EQ(*Sha256FileHex(loaded->dir + "/" + RankStateFileName(r, world)), loaded->manifest.rank_states(r).sha256());
    }
    auto sig = ParseCheckpointSignature(*ReadFile(loaded->dir + "/manifest.sig"), &k.trust);
    ASSERT_TRUE(sig.ok());
    EXPECT_EQ(sig->subjects.size(), static_cast<size_t>(1 + 2 * world));  // manifest, shards, rank states
    EXPECT_EQ(sig->subjects.at(RankStateFileName(world - 1, world)), loaded->manifest.rank_states(world - 1).sha256());
  }
}

// A resuming worker reads its own rank state only; another rank's file must still be
// there at its size, but its bytes are never read (nor used).
TEST(Checkpoint, LoadForRankReadsOnlyItsOwnRankState) {
  Keys k;
  TempDir tmp;
  TrainerSnapshot snap = MakeSnapshot(9, 30000, 12);
  snap.world_size = 3;
  SaveMultiRank(tmp / "job", 3, snap, k.key, [](int r, TrainerSnapshot* s) { s->rank_tensors = {RankState(r)}; });
  for (int r = 0; r < 3; ++r) {
    auto mine = LoadCheckpointForRank(tmp / "job", k.trust, false, OwnRankState{r, 3});
    ASSERT_TRUE(mine.ok()) << mine.status().ToString();
    ExpectSameState(snap, mine->snapshot);
    ASSERT_EQ(mine->snapshot.rank_tensors.size(), 1u);
    EXPECT_EQ(mine->snapshot.rank_tensors[0].name, RankState(r).name);
    EXPECT_TRUE(mine->snapshot.rank_tensors[0].bytes == RankState(r).bytes);
  }
  // Saved at 3, resumed at 2: nobody's state applies (the worker resets it).
  auto other_world = LoadCheckpointForRank(tmp / "job", k.trust, false, OwnRankState{1, 2});
  ASSERT_TRUE(other_world.ok());
  EXPECT_TRUE(other_world->snapshot.rank_tensors.empty());

  const std::string dir = tmp / "job/step-12";
  std::string two = *ReadFile(dir + "/" + RankStateFileName(2, 3));
  two[5] ^= 1;
  ASSERT_TRUE(WriteFileAtomic(dir + "/" + RankStateFileName(2, 3), two).ok());
  EXPECT_TRUE(LoadCheckpointForRank(dir, k.trust, false, OwnRankState{0, 3}).ok());  // rank 2's bytes unused
  auto own = LoadCheckpointForRank(dir, k.trust, false, OwnRankState{2, 3});
  EXPECT_EQ(own.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(own.status().message().find(RankStateFileName(2, 3)), std::string::npos) << own.status().ToString();
  EXPECT_EQ(VerifyCheckpoint(dir, k.trust, false).status().code(), StatusCode::kDataLoss);  // verify checks all
  ASSERT_TRUE(WriteFileAtomic(dir + "/" + RankStateFileName(2, 3), two.substr(1)).ok());
  EXPECT_EQ(LoadCheckpointForRank(dir, k.trust, false, OwnRankState{0, 3}).status().code(), StatusCode::kDataLoss);
}

// A rank state from some ranks only is a bug in the caller: nothing is committed.
TEST(Checkpoint, RankStatesFromSomeRanksOnlyAreRefused) {
  Keys k;
  TempDir tmp;
  TrainerSnapshot snap = MakeSnapshot(3, 20000, 8);
  snap.world_size = 3;
  std::vector<Status> results = TrySaveMultiRank(tmp / "job", 3, snap, k.key, [](int r, TrainerSnapshot* s) {
    if (r == 1) s->rank_tensors = {RankState(r)};
  });
  EXPECT_FALSE(results[0].ok());
  EXPECT_NE(results[0].message().find("1 of 3 ranks wrote a rank state"), std::string::npos) << results[0].ToString();
  EXPECT_EQ(LoadCheckpoint(tmp / "job", k.trust, false).status().code(), StatusCode::kNotFound);
}

TEST(Checkpoint, MultiRankWriteThenLoad) {
  Keys k;
  for (int world = 1; world <= 4; ++world) {
    for (size_t bytes : {size_t{0}, size_t{70001}}) {
      TempDir tmp;
      TrainerSnapshot snap = MakeSnapshot(world, bytes, 10 + world);
      if (bytes == 0) snap.tensors.clear();  // an empty state still round-trips
      SaveMultiRank(tmp / "job", world, snap, k.key);
      auto loaded = LoadCheckpoint(tmp / "job", k.trust, false);
      ASSERT_TRUE(loaded.ok()) << "world " << world << ": " << loaded.status().ToString();
      EXPECT_EQ(loaded->manifest.shards_size(), world);
      ExpectSameState(snap, loaded->snapshot);
    }
  }
}

TEST(Checkpoint, LowLevelWriteShardAndCommit) {
  TempDir tmp;
  Keys k;
  const std::string job = tmp / "job";
  TrainerSnapshot snap = MakeSnapshot(5, 50000, 9);
  auto ser = SerializeSnapshot(snap);
  ASSERT_TRUE(ser.ok());
  const int world = 3;
  std::vector<ShardInfo> shards;
  for (int r = 0; r < world; ++r) {
    ByteRange b = SliceForRank(ser->bytes.size(), r, world);
    auto info = WriteShard(StagingPath(job, 9, "n1"), r, world, std::string_view(ser->bytes).substr(b.begin, b.size()));
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    EXPECT_EQ(info->sha256_hex, Sha256Hex(std::string_view(ser->bytes).substr(b.begin, b.size())));
    shards.push_back(*info);
  }
  std::swap(shards[0], shards[2]);  // gather order does not matter
  CommitInfo info;
  ASSERT_TRUE(CommitCheckpoint(job, 9, ser->manifest, shards, &k.key, {}, &info).ok());
  EXPECT_EQ(info.dir, job + "/step-9");
  EXPECT_EQ(info.signer_key_id, k.key.public_key.key_id);
  auto loaded = LoadCheckpoint(job + "/step-9", k.trust, false);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ExpectSameState(snap, loaded->snapshot);
  // Every tensor names the shard holding its first byte.
  for (const auto& t : loaded->manifest.tensors()) {
    ByteRange b = SliceForRank(ser->bytes.size(), t.shard(), world);
    EXPECT_TRUE(b.begin <= t.offset() && t.offset() < b.end) << t.name();
  }

  shards.pop_back();  // an incomplete set is never committed
  EXPECT_FALSE(CommitCheckpoint(job, 10, ser->manifest, shards, &k.key).ok());
  ShardInfo failed = shards[0];
  failed.error = "disk full";
  EXPECT_EQ(CommitCheckpoint(job, 10, ser->manifest, {failed}, &k.key).code(), StatusCode::kAborted);
}

TEST(Checkpoint, ManifestRecordsLineageAndVersions) {
  TempDir tmp;
  Keys k;
  std::vector<CommitInfo> commits;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  o.key = k.key;
  o.parent_digest = std::string(64, 'b');  // the checkpoint this run resumed from
  o.dependency_versions = {{"nccl", "2.18.5"}, {"mpi", "Open MPI 4.1.4"}};
  o.on_commit = [&](const CommitInfo& c) { commits.push_back(c); };
  auto cp = AsyncCheckpointer::Create(o);
  ASSERT_TRUE(cp.ok());
  ASSERT_TRUE((*cp)->SaveAsync(MakeSnapshot(1, 8192, 100)).ok());
  ASSERT_TRUE((*cp)->SaveAsync(MakeSnapshot(2, 8192, 200)).ok());
  ASSERT_TRUE((*cp)->Wait().ok());
  ASSERT_EQ(commits.size(), 2u);
  EXPECT_EQ(commits[0].step, 100);
  EXPECT_EQ(commits[1].signer_key_id, k.key.public_key.key_id);
  auto first = VerifyCheckpoint(o.job_dir + "/step-100", k.trust, false);
  auto second = VerifyCheckpoint(o.job_dir + "/step-200", k.trust, false);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->manifest.parent_digest(), o.parent_digest);
  EXPECT_EQ(second->manifest.parent_digest(), first->manifest_digest);
  EXPECT_EQ(commits[0].manifest_digest, first->manifest_digest);
  EXPECT_EQ((*cp)->parent_digest(), second->manifest_digest);
  const auto& m = second->manifest;
  EXPECT_EQ(m.spec_digest(), std::string(64, 'a'));
  EXPECT_EQ(m.codec(), "powersgd");
  EXPECT_FALSE(m.code_version().empty());
  EXPECT_GT(m.created_unix_ms(), 0);
  EXPECT_EQ(m.dependency_versions().at("nccl"), "2.18.5");
  EXPECT_TRUE(m.dependency_versions().count("protobuf") && m.dependency_versions().count("openssl"));
  bool has_optim = false;
  for (const auto& t : m.tensors()) has_optim |= t.name() == "optim.momentum";
  EXPECT_TRUE(has_optim);
}

TEST(Checkpoint, AsyncSavesQueueBehindTwoBuffers) {
  TempDir tmp;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  auto cp = AsyncCheckpointer::Create(o);
  ASSERT_TRUE(cp.ok());
  TrainerSnapshot live = MakeSnapshot(9, 2 << 20, 0);
  for (int step = 1; step <= 6; ++step) {
    live.step = step;
    ASSERT_TRUE((*cp)->SaveAsync(live).ok());  // copies; `live` stays usable
  }
  ASSERT_TRUE((*cp)->Wait().ok());
  auto st = (*cp)->stats();
  EXPECT_EQ(st.saves, 6);
  EXPECT_EQ(st.completed, 6);
  EXPECT_EQ(st.failed, 0);
  EXPECT_GE(st.max_stall_s, st.last_stall_s);
  TrustStore none;
  auto loaded = LoadCheckpoint(o.job_dir, none, /*allow_unsigned=*/true);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->snapshot.step, 6);
  EXPECT_FALSE(loaded->signature_verified);
  ExpectSameState(live, loaded->snapshot);
}

TEST(Checkpoint, OneProcessCanWriteSeveralShardsAtOnce) {
  TempDir tmp;
  Keys k;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  o.key = k.key;
  o.local_shards = 3;  // hashing on three threads; automatic from 64 MiB up
  auto cp = AsyncCheckpointer::Create(o);
  ASSERT_TRUE(cp.ok());
  TrainerSnapshot snap = MakeSnapshot(8, 100000, 4);
  snap.rank_tensors = {RankState(0)};  // written beside the shards, as rank 0 of 1
  ASSERT_TRUE((*cp)->SaveAsync(snap).ok());
  ASSERT_TRUE((*cp)->Wait().ok());
  auto loaded = LoadCheckpoint(o.job_dir, k.trust, false);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->manifest.shards_size(), 3);
  EXPECT_EQ(loaded->manifest.world_size(), 1);  // the trainer's world, not the shard count
  ExpectSameState(snap, loaded->snapshot);
  ASSERT_EQ(loaded->manifest.rank_states_size(), 1);
  EXPECT_EQ(loaded->manifest.rank_states(0).file(), RankStateFileName(0, 1));
  ASSERT_EQ(loaded->snapshot.rank_tensors.size(), 1u);
  EXPECT_TRUE(loaded->snapshot.rank_tensors[0].bytes == snap.rank_tensors[0].bytes);
}

TEST(Checkpoint, SaveAsyncWithFillsTheBufferDirectly) {
  TempDir tmp;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  auto cp = AsyncCheckpointer::Create(o);
  ASSERT_TRUE(cp.ok());
  std::vector<float> params(50000);  // the trainer's own buffer
  for (size_t i = 0; i < params.size(); ++i) params[i] = static_cast<float>(i) * 0.5f;
  for (int step = 1; step <= 3; ++step) {
    params[0] = static_cast<float>(step);
    ASSERT_TRUE((*cp)->SaveAsyncWith([&](TrainerSnapshot* s) {
      s->job_id = "job-fill";
      s->step = step;
      s->tensors.resize(1);
      s->tensors[0].name = "w";
      s->tensors[0].dtype = "F32";
      s->tensors[0].shape = {static_cast<int64_t>(params.size())};
      AssignBytes(&s->tensors[0].bytes, params.data(), params.size() * sizeof(float));
      return OkStatus();
    }).ok());
  }
  // A failing fill releases its buffer: later saves are not blocked.
  EXPECT_EQ((*cp)->SaveAsyncWith([](TrainerSnapshot*) { return Aborted("trainer changed its mind"); }).code(),
            StatusCode::kAborted);
  EXPECT_EQ((*cp)->SaveAsyncWith([](TrainerSnapshot* s) {
              s->tensors.resize(1);
              s->tensors[0].shape = {3};  // disagrees with the bytes
              return OkStatus();
            }).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE((*cp)->Wait().ok());
  auto loaded = LoadCheckpoint(o.job_dir, TrustStore(), true);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->snapshot.step, 3);
  ASSERT_EQ(loaded->snapshot.tensors.size(), 1u);
  EXPECT_EQ(loaded->snapshot.tensors[0].bytes,
            std::string(reinterpret_cast<const char*>(params.data()), params.size() * sizeof(float)));
}

// Prewarmed buffers hold zeros of the announced sizes; saves into them, by copy and by
// fill, with more, fewer or differently sized tensors than announced, write exactly
// the state they were given.
TEST(Checkpoint, PrewarmedBuffersSaveExactlyWhatTheyAreGiven) {
  TempDir tmp;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  auto cp = AsyncCheckpointer::Create(o);
  ASSERT_TRUE(cp.ok());
  const TrainerSnapshot first = MakeSnapshot(3, 1 << 16, 2);
  std::vector<size_t> sizes;
  for (const NamedTensor& t : first.tensors) sizes.push_back(t.bytes.size());
  sizes.push_back(12345);  // a tensor the saves will not have
  (*cp)->Prewarm(sizes);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((*cp)->stats().prewarmed_buffers < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ((*cp)->stats().prewarmed_buffers, 2);
  // Again once a codec's state exists: the rank tensors' buffers are warmed too.
  TrainerSnapshot first_with_state = first;
  first_with_state.rank_tensors = {testing::MakeRankState(3, 0, 5000)};
  (*cp)->Prewarm(sizes, {5000, 777});
  while ((*cp)->stats().prewarmed_buffers < 4 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ((*cp)->stats().prewarmed_buffers, 4);

  ASSERT_TRUE((*cp)->SaveAsync(first_with_state).ok());
  ASSERT_TRUE((*cp)->Wait().ok());
  auto loaded = LoadCheckpoint(o.job_dir, TrustStore(), true);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ExpectSameState(first, loaded->snapshot);
  ASSERT_EQ(loaded->snapshot.rank_tensors.size(), 1u);  // not the prewarmed second one
  EXPECT_TRUE(loaded->snapshot.rank_tensors[0].bytes == first_with_state.rank_tensors[0].bytes);

  TrainerSnapshot second = MakeSnapshot(4, 3 << 16, 1);  // bigger tensors, fewer of them
  second.tensors.pop_back();
  second.step = first.step + 1;
  ASSERT_TRUE((*cp)->SaveAsyncWith([&](TrainerSnapshot* s) {
    CopySnapshotInto(second, s);
    return OkStatus();
  }).ok());
  ASSERT_TRUE((*cp)->Wait().ok());
  loaded = LoadCheckpoint(o.job_dir, TrustStore(), true);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ExpectSameState(second, loaded->snapshot);
  EXPECT_EQ(loaded->manifest.rank_states_size(), 0);  // this save had none
}

TEST(Checkpoint, WriteErrorsSurfaceInWait) {
  TempDir tmp;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  o.nonce = "fixed";
  auto cp = AsyncCheckpointer::Create(o);
  ASSERT_TRUE(cp.ok());
  TrainerSnapshot bad = MakeSnapshot(1, 4096);
  bad.tensors[0].shape = {1};
  EXPECT_EQ((*cp)->SaveAsync(bad).code(), StatusCode::kInvalidArgument);  // refused up front
  // A file where the staging directory must go: the write fails on the writer thread
  // (works as root too, unlike a read-only directory).
  ASSERT_TRUE(WriteFileAtomic(o.job_dir + "/step-3.tmp-fixed", "in the way").ok());
  ASSERT_TRUE((*cp)->SaveAsync(MakeSnapshot(1, 4096, 3)).ok());
  Status s = (*cp)->Wait();
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE((*cp)->last_error().ok());
  EXPECT_EQ((*cp)->stats().failed, 1);
  EXPECT_TRUE((*cp)->Wait().ok());  // reported once
  ::unlink((o.job_dir + "/step-3.tmp-fixed").c_str());
  ASSERT_TRUE((*cp)->SaveAsync(MakeSnapshot(1, 4096, 4)).ok());  // later saves still work
  EXPECT_TRUE((*cp)->Wait().ok());
}

TEST(Keys, SecretKeyReadableByOthersIsRefusedAtSigning) {
  TempDir tmp;
  ASSERT_TRUE(WriteKeyPair(GenerateKeyPair(), tmp.path(), "signer").ok());
  const std::string key = tmp / "signer.key";
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  o.sign_key_path = key;
  ASSERT_TRUE(AsyncCheckpointer::Create(o).ok());
  ::chmod(key.c_str(), 0644);
  auto refused = AsyncCheckpointer::Create(o);
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("signer.key"), std::string::npos);
}

TEST(Keys, UnsignedAndUntrustedNeedAllowUnsigned) {
  TempDir tmp;
  Keys k, other;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "unsigned";
  ASSERT_TRUE((*AsyncCheckpointer::Create(o))->SaveNow(MakeSnapshot(1, 4096, 5)).ok());
  auto refused = LoadCheckpoint(o.job_dir, k.trust, false);
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("manifest.sig"), std::string::npos);
  EXPECT_TRUE(LoadCheckpoint(o.job_dir, k.trust, true).ok());

  o.job_dir = tmp / "signed";
  o.key = k.key;
  ASSERT_TRUE((*AsyncCheckpointer::Create(o))->SaveNow(MakeSnapshot(1, 4096, 5)).ok());
  auto untrusted = LoadCheckpoint(o.job_dir, other.trust, false);
  EXPECT_EQ(untrusted.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(untrusted.status().message().find("untrusted"), std::string::npos);
  auto allowed = LoadCheckpoint(o.job_dir, other.trust, true);
  ASSERT_TRUE(allowed.ok());
  EXPECT_FALSE(allowed->signature_verified);
  EXPECT_EQ(allowed->signer_key_id, "");
}

// A grown signature or manifest is refused by its size, before it is read into memory
// (a sparse file: nothing is written to disk either), with or without --allow-unsigned.
TEST(Keys, OversizedSignatureOrManifestIsRefusedUnread) {
  TempDir tmp;
  Keys k;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  o.key = k.key;
  ASSERT_TRUE((*AsyncCheckpointer::Create(o))->SaveNow(MakeSnapshot(1, 4096, 5)).ok());
  ASSERT_TRUE(LoadCheckpoint(o.job_dir, k.trust, false).ok());
  for (const char* file : {"manifest.sig", "manifest.pb"}) {
    SCOPED_TRACE(file);
    const std::string path = o.job_dir + "/step-5/" + file;
    const std::string saved = *ReadFile(path);
    ASSERT_EQ(::truncate(path.c_str(), off_t{1} << 30), 0);  // 1 GiB
    for (bool allow_unsigned : {false, true}) {
      auto r = LoadCheckpoint(o.job_dir, k.trust, allow_unsigned);
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
      EXPECT_NE(r.status().message().find(path + ": larger than"), std::string::npos) << r.status().ToString();
    }
    ASSERT_TRUE(WriteFileAtomic(path, saved).ok());
    ASSERT_TRUE(LoadCheckpoint(o.job_dir, k.trust, false).ok());
  }
}

TEST(Checkpoint, SavingAStepAgainReplacesIt) {
  TempDir tmp;
  Keys k;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  o.key = k.key;
  auto cp = AsyncCheckpointer::Create(o);
  ASSERT_TRUE((*cp)->SaveNow(MakeSnapshot(1, 4096, 50)).ok());
  TrainerSnapshot again = MakeSnapshot(2, 4096, 50);
  ASSERT_TRUE((*cp)->SaveNow(again).ok());
  auto loaded = LoadCheckpoint(o.job_dir, k.trust, false);
  ASSERT_TRUE(loaded.ok());
  ExpectSameState(again, loaded->snapshot);
}

TEST(Checkpoint, ShardInfoSurvivesTheWire) {
  auto state = BuildRankState({NamedTensor{"codec.state.2", "U8", {3}, "abc"}}, 2, 4);
  ASSERT_TRUE(state.ok());
  ShardInfo s{"/x/step-1.tmp-n", 2, 4, "shard-2-of-4.bin", 12345, std::string(64, 'c'), "oops \"quoted\"", *state};
  auto back = DecodeShardInfo(EncodeShardInfo(s));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->staging_dir, s.staging_dir);
  EXPECT_EQ(back->rank, 2);
  EXPECT_EQ(back->length, 12345u);
  EXPECT_EQ(back->error, s.error);
  ASSERT_TRUE(back->rank_state.has_value());  // binary protobuf bytes survive the JSON
  EXPECT_EQ(back->rank_state->SerializeAsString(), s.rank_state->SerializeAsString());
  EXPECT_FALSE(DecodeShardInfo("{\"rank\": \"x\"}").ok());
  EXPECT_FALSE(DecodeShardInfo("\x01\x02").ok());
  std::string garbled = EncodeShardInfo(s);
  const size_t at = garbled.find(Base64Encode(s.rank_state->SerializeAsString()));
  ASSERT_NE(at, std::string::npos);
  garbled.replace(at, Base64Encode(s.rank_state->SerializeAsString()).size(), Base64Encode("\xff\xff\xff\xff"));
  EXPECT_FALSE(DecodeShardInfo(garbled).ok());  // not a CheckpointRankState
}

}  // namespace
}  // namespace shoal

// Shard writing (hash while writing, fsync) and the rank-0 commit protocol:
// staging dir -> manifest + signature -> fsync -> rename -> fsync parent -> latest.
// A crash before the rename leaves only a .tmp- directory, which no reader ever picks.
#include "checkpoint/writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "checkpoint/format.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/sha256.h"

namespace shoal {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

Status Errno(const std::string& what, const std::string& path) {
  return Internal(what + " " + path + ": " + std::strerror(errno));
}

Status WriteAll(int fd, const char* data, size_t len, const std::string& path) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write failed on", path);
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return OkStatus();
}

// Writes small files, then fsyncs them all: the first fsync's journal commit (ext4
// data=ordered) usually carries the others' data too, so they cost little. No rename
// dance: inside a staging directory nobody reads yet.
Status WriteDurable(const std::vector<std::pair<std::string, const std::string*>>& files) {
  std::vector<int> fds;
  Status s;
  for (const auto& [path, content] : files) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      s = Errno("cannot create", path);
      break;
    }
    fds.push_back(fd);
    s = WriteAll(fd, content->data(), content->size(), path);
    if (!s.ok()) break;
  }
  for (size_t i = 0; i < fds.size(); ++i) {
    if (s.ok() && ::fsync(fds[i]) != 0) s = Errno("fsync failed on", files[i].first);
    ::close(fds[i]);
  }
  return s;
}

// Below this, a helper thread costs more than hashing inline.
constexpr size_t kInlineHashBytes = 1 << 20;
// Writes go out in chunks; after each one writeback is started (sync_file_range), so the
// final fsync finds most of the file already on its way to disk.
constexpr size_t kChunkBytes = 8 << 20;

}  // namespace

std::string EncodeShardInfo(const ShardInfo& s) {
  return json{{"dir", s.staging_dir}, {"rank", s.rank}, {"world", s.world}, {"file", s.file},
              {"length", s.length}, {"sha256", s.sha256_hex}, {"error", s.error},
              {"rank_state", s.rank_state ? Base64Encode(s.rank_state->SerializeAsString()) : ""}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

StatusOr<ShardInfo> DecodeShardInfo(std::string_view bytes) {
  json j = json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("shard info is not a JSON object");
  try {
    ShardInfo s;
    s.staging_dir = j.at("dir").get<std::string>();
    s.rank = j.at("rank").get<int>();
    s.world = j.at("world").get<int>();
    s.file = j.at("file").get<std::string>();
    s.length = j.at("length").get<uint64_t>();
    s.sha256_hex = j.at("sha256").get<std::string>();
    s.error = j.at("error").get<std::string>();
    if (j.contains("rank_state")) {
      ASSIGN_OR_RETURN(std::string bytes, Base64Decode(j.at("rank_state").get<std::string>()));
      if (!bytes.empty() && !s.rank_state.emplace().ParseFromString(bytes))
        return InvalidArgument("shard info carries a malformed rank state");
    }
    return s;
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("malformed shard info: ") + e.what());
  }
}

std::string StagingPath(const std::string& job_dir, int64_t step, const std::string& nonce) {
  return JoinPath(job_dir, StagingDirName(step, nonce));
}

StatusOr<ShardInfo> WriteShard(const std::string& staging_dir, int rank, int world, std::string_view bytes) {
  return WriteShardPieces(staging_dir, rank, world, {bytes});
}

namespace {
struct Written {
  uint64_t length = 0;
  std::string sha256_hex;
};

// Creates `path` from `pieces`: hashes on a helper thread while writing, so the file is
// never read back (both threads only read the caller's memory, and hashing overlaps the
// write syscalls and the fsync instead of adding to them), then fsyncs it.
StatusOr<Written> WriteHashed(const std::string& path, const std::vector<std::string_view>& pieces) {
  Written out;
  for (auto p : pieces) out.length += p.size();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", path);
  Digest digest{};
  auto hash_all = [&] {
    Sha256 h;
    for (auto p : pieces) h.Update(p.data(), p.size());
    digest = h.Finish();
  };
  std::thread hasher;
  if (out.length >= kInlineHashBytes) hasher = std::thread(hash_all);
  else hash_all();

  Status s;
  uint64_t off = 0;
  for (auto p : pieces) {
    for (size_t pos = 0; s.ok() && pos < p.size(); pos += kChunkBytes) {
      size_t n = std::min(kChunkBytes, p.size() - pos);
      s = WriteAll(fd, p.data() + pos, n, path);
      if (s.ok()) ::sync_file_range(fd, static_cast<off_t>(off), static_cast<off_t>(n), SYNC_FILE_RANGE_WRITE);
      off += n;
    }
  }
  if (s.ok() && ::fsync(fd) != 0) s = Errno("fsync failed on", path);
  ::close(fd);
  if (hasher.joinable()) hasher.join();
  if (!s.ok()) return s;
  out.sha256_hex = ToHex(digest);
  return out;
}
}  // namespace

StatusOr<ShardInfo> WriteShardPieces(const std::string& staging_dir, int rank, int world,
                                     const std::vector<std::string_view>& pieces) {
  if (world < 1 || rank < 0 || rank >= world)
    return InvalidArgument("rank " + std::to_string(rank) + " of world " + std::to_string(world));
  RETURN_IF_ERROR(MakeDirs(staging_dir));
  ShardInfo info{staging_dir, rank, world, ShardFileName(rank, world), 0, "", "", std::nullopt};
  ASSIGN_OR_RETURN(Written w, WriteHashed(JoinPath(staging_dir, info.file), pieces));
  info.length = w.length;
  info.sha256_hex = w.sha256_hex;
  return info;
}

StatusOr<CheckpointRankState> WriteRankState(const std::string& staging_dir, int rank, int world,
                                             const std::vector<NamedTensor>& rank_tensors) {
  ASSIGN_OR_RETURN(CheckpointRankState state, BuildRankState(rank_tensors, rank, world));
  RETURN_IF_ERROR(MakeDirs(staging_dir));
  std::vector<std::string_view> pieces;
  for (const auto& t : rank_tensors) pieces.emplace_back(t.bytes);
  ASSIGN_OR_RETURN(Written w, WriteHashed(JoinPath(staging_dir, state.file()), pieces));
  state.set_sha256(w.sha256_hex);
  return state;
}

std::string MakeCheckpointStatement(const CheckpointManifest& m, const std::string& manifest_sha256_hex) {
  std::vector<Subject> subjects{{kManifestFile, manifest_sha256_hex}};
  for (const auto& s : m.shards()) subjects.push_back({s.file(), s.sha256()});
  for (const auto& s : m.rank_states()) subjects.push_back({s.file(), s.sha256()});
  // The predicate repeats a few manifest fields for people reading the envelope; the
  // reader trusts only the manifest whose digest is the first subject.
  json pred = {{"job_id", m.job_id()}, {"step", m.step()}, {"spec_digest", m.spec_digest()},
               {"parent_digest", m.parent_digest()}, {"code_version", m.code_version()}};
  return MakeStatement(subjects, kCheckpointPredicateType, pred.dump(-1, ' ', false, json::error_handler_t::replace));
}

namespace {

// Shard table and tensor shard indices; refuses an incomplete or inconsistent set.
Status FillShards(const std::vector<ShardInfo>& shards, CheckpointManifest* m) {
  const int world = static_cast<int>(shards.size());
  if (world < 1) return InvalidArgument("commit needs at least one shard");
  std::vector<const ShardInfo*> by_rank(world, nullptr);
  for (const auto& s : shards) {
    if (!s.error.empty()) return Aborted("rank " + std::to_string(s.rank) + " failed to write its shard: " + s.error);
    if (s.world != world || s.rank < 0 || s.rank >= world || by_rank[s.rank])
      return InvalidArgument("shard set is not one shard per rank of world " + std::to_string(world));
    if (s.staging_dir != shards[0].staging_dir) return InvalidArgument("ranks wrote into different staging directories");
    by_rank[s.rank] = &s;
  }
  m->clear_shards();
  std::vector<uint64_t> ends;
  uint64_t total = 0;
  for (int r = 0; r < world; ++r) {
    CheckpointShard* e = m->add_shards();
    e->set_file(ShardFileName(r, world));
    e->set_length(by_rank[r]->length);
    e->set_sha256(by_rank[r]->sha256_hex);
    e->set_rank(r);
    total += by_rank[r]->length;
    ends.push_back(total);
  }
  uint64_t tensor_bytes = 0;
  for (auto& t : *m->mutable_tensors()) {
    tensor_bytes += t.length();
    int shard = static_cast<int>(std::upper_bound(ends.begin(), ends.end(), t.offset()) - ends.begin());
    t.set_shard(std::min(shard, world - 1));
  }
  if (tensor_bytes != total)
    return InvalidArgument("shards hold " + std::to_string(total) + " bytes but the tensor table needs " +
                           std::to_string(tensor_bytes));
  return OkStatus();
}

// The rank states the ranks sent, in rank order: one per rank of the manifest's world
// size, or none at all.
Status FillRankStates(const std::vector<ShardInfo>& shards, CheckpointManifest* m) {
  std::vector<CheckpointRankState> states;
  for (const auto& s : shards)
    if (s.rank_state) states.push_back(*s.rank_state);
  m->clear_rank_states();
  if (states.empty()) return OkStatus();
  if (static_cast<int>(states.size()) != m->world_size())
    return InvalidArgument(std::to_string(states.size()) + " of " + std::to_string(m->world_size()) +
                           " ranks wrote a rank state; all must, or none");
  std::sort(states.begin(), states.end(), [](const auto& a, const auto& b) { return a.rank() < b.rank(); });
  for (auto& st : states) *m->add_rank_states() = std::move(st);
  return OkStatus();  // ParseManifest checks ranks, names and tables before the commit
}

Status RemoveStrays(const std::string& dir, const std::set<std::string>& wanted) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (wanted.count(name)) continue;
    // Left by an earlier attempt at this step under the same nonce; a stray would make
    // the reader refuse the directory.
    fs::remove_all(it->path(), ec);
    if (ec) return Internal("cannot remove stray " + it->path().string() + ": " + ec.message());
  }
  if (ec) return Internal("cannot list " + dir + ": " + ec.message());
  return OkStatus();
}

}  // namespace

Status CommitCheckpoint(const std::string& job_dir, int64_t step, const CheckpointManifest& manifest_without_shards,
                        const std::vector<ShardInfo>& shards, const KeyPair* key, const RetentionPolicy& retention,
                        CommitInfo* info) {
  CheckpointManifest m = manifest_without_shards;
  m.set_format_version(kCheckpointFormatVersion);
  m.set_step(step);
  RETURN_IF_ERROR(FillShards(shards, &m));
  if (m.world_size() <= 0) m.set_world_size(static_cast<int>(shards.size()));
  RETURN_IF_ERROR(FillRankStates(shards, &m));
  if (m.created_unix_ms() == 0) m.set_created_unix_ms(UnixMillis());
  if (m.code_version().empty()) m.set_code_version(CodeVersion());
  for (const auto& [name, version] : LinkedDependencyVersions()) m.mutable_dependency_versions()->insert({name, version});

  const std::string staging = shards[0].staging_dir;
  const std::string prefix = StepDirName(step) + ".tmp-";
  const std::string base = fs::path(staging).filename().string();
  std::error_code ec;
  if (base.rfind(prefix, 0) != 0 || !fs::equivalent(fs::path(staging).parent_path(), job_dir, ec))
    return InvalidArgument("staging directory " + staging + " is not " + JoinPath(job_dir, prefix + "<nonce>"));

  // Readers go through the same parser, so refuse here what they would refuse later.
  const std::string manifest_bytes = SerializeManifest(m);
  RETURN_IF_ERROR(ParseManifest(manifest_bytes).status().WithContext("refusing to commit " + staging));
  const std::string digest = Sha256Hex(manifest_bytes);
  std::set<std::string> wanted{kManifestFile};
  for (const auto& s : m.shards()) wanted.insert(s.file());
  for (const auto& s : m.rank_states()) wanted.insert(s.file());
  std::vector<std::pair<std::string, const std::string*>> files{{JoinPath(staging, kManifestFile), &manifest_bytes}};
  std::string envelope;
  if (key) {
    envelope = SignDsse(kInTotoPayloadType, MakeCheckpointStatement(m, digest), *key);
    files.emplace_back(JoinPath(staging, kSignatureFile), &envelope);
    wanted.insert(kSignatureFile);
  }
  RETURN_IF_ERROR(WriteDurable(files));
  RETURN_IF_ERROR(RemoveStrays(staging, wanted));
  RETURN_IF_ERROR(FsyncDir(staging));

  const std::string final_dir = JoinPath(job_dir, StepDirName(step));
  // `latest` moves first, then the directory appears under its name: a crash between
  // the two leaves `latest` naming a missing directory (readers take the newest committed
  // step), never naming an older checkpoint while a newer one is committed, which
  // readers refuse as a turned-back pointer.
  RETURN_IF_ERROR(UpdateLatestPointer(job_dir, step));
  std::string aside;
  if (PathExists(final_dir)) {
    // A second save of one step replaces the first. Between the two renames `latest`
    // names a missing directory, as above.
    aside = final_dir + ".del-" + RandomNonce();
    if (::rename(final_dir.c_str(), aside.c_str()) != 0) return Errno("cannot move aside", final_dir);
  }
  if (::rename(staging.c_str(), final_dir.c_str()) != 0) return Errno("cannot rename staging directory to", final_dir);
  RETURN_IF_ERROR(FsyncDir(job_dir));
  if (!aside.empty()) fs::remove_all(aside, ec);

  Status kept = ApplyRetention(job_dir, retention);
  if (!kept.ok()) SHOAL_LOG_WARN("checkpoint {} committed, but retention failed: {}", final_dir, kept.ToString());
  if (info) *info = CommitInfo{step, final_dir, digest, key ? key->public_key.key_id : ""};
  return OkStatus();
}

}  // namespace shoal

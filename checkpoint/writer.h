// Writing a checkpoint in two calls the worker glues with its communicator: every rank
// writes its slice of the serialized state (WriteShard), the ranks allgather the
// ShardInfos, and rank 0 commits (CommitCheckpoint: manifest, signature, rename, latest).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint.pb.h"
#include "checkpoint/format.h"
#include "checkpoint/job_dir.h"
#include "common/signing.h"
#include "common/status.h"

namespace shoal {

// What one rank wrote. Travels through the allgather (EncodeShardInfo), so rank 0 can
// commit without reading any shard back.
struct ShardInfo {
  std::string staging_dir;  // <job_dir>/step-<N>.tmp-<nonce>, equal on every rank
  int rank = 0;
  int world = 1;
  std::string file;         // shard-<r>-of-<W>.bin
  uint64_t length = 0;
  std::string sha256_hex;
  // Non-empty when this rank failed to write. A failed rank still joins the allgather
  // (so nobody hangs) and rank 0 then refuses to commit.
  std::string error;
  // This rank's rank-state file, when it wrote one (WriteRankState): its table and
  // digest, for rank 0 to put in the manifest.
  std::optional<CheckpointRankState> rank_state;
};

std::string EncodeShardInfo(const ShardInfo& info);
StatusOr<ShardInfo> DecodeShardInfo(std::string_view bytes);

// <job_dir>/step-<N>.tmp-<nonce>
std::string StagingPath(const std::string& job_dir, int64_t step, const std::string& nonce);

// Writes `bytes` (this rank's SliceForRank of the serialized state) to
// <staging_dir>/shard-<rank>-of-<world>.bin, creating the directory. Hashes on a helper
// thread while writing, so the file is never read back, then fsyncs the file.
StatusOr<ShardInfo> WriteShard(const std::string& staging_dir, int rank, int world, std::string_view bytes);
// The same from several pieces (ViewRange of a TrainerSnapshot), without concatenating.
StatusOr<ShardInfo> WriteShardPieces(const std::string& staging_dir, int rank, int world,
                                     const std::vector<std::string_view>& pieces);

// Writes rank_tensors to <staging_dir>/rank-<rank>-of-<world>.bin the same way (hashed
// while writing, fsynced) and returns its table and digest for ShardInfo::rank_state.
StatusOr<CheckpointRankState> WriteRankState(const std::string& staging_dir, int rank, int world,
                                             const std::vector<NamedTensor>& rank_tensors);

struct CommitInfo {
  int64_t step = 0;
  std::string dir;              // <job_dir>/step-<N>
  std::string manifest_digest;  // SHA-256 hex of manifest.pb
  std::string signer_key_id;    // "" when unsigned
  std::string parent_digest;    // as the manifest records them (for the lineage)
  std::string lineage_digest;
};

// Run by rank 0 once every rank's shard is durable. `manifest_without_shards` comes from
// BuildManifest/SerializeSnapshot plus parent digest, code and dependency versions;
// this fills the shard table, each tensor's shard index and, when the ranks wrote rank
// states (all of them or none), the rank-state table. In order: writes
// manifest.pb and (when key != nullptr) manifest.sig into the staging directory, removes
// stray files, fsyncs the files and the directory, renames it to step-<N> (replacing an
// earlier save of the same step), fsyncs the parent, points `latest` at it, then applies
// retention (a retention failure is logged, not returned: the checkpoint is committed).
Status CommitCheckpoint(const std::string& job_dir, int64_t step, const CheckpointManifest& manifest_without_shards,
                        const std::vector<ShardInfo>& shards, const KeyPair* key,
                        const RetentionPolicy& retention = {}, CommitInfo* info = nullptr);

// The in-toto Statement v1 that manifest.sig signs: subjects manifest.pb, every shard and
// every rank-state file.
std::string MakeCheckpointStatement(const CheckpointManifest& manifest, const std::string& manifest_sha256_hex);

}  // namespace shoal

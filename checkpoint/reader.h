// Verified loading. Order matters: the signature against the trust store, then the
// manifest's digest against the signed statement, then every shard's digest (shards in
// parallel), and only then is any tensor byte used. Every refusal names the file.
#pragma once

#include <optional>
#include <string>

#include "checkpoint.pb.h"
#include "checkpoint/format.h"
#include "common/signing.h"
#include "common/status.h"

namespace shoal {

struct LoadedCheckpoint {
  std::string dir;              // the step directory that was read
  CheckpointManifest manifest;
  std::string manifest_digest;  // SHA-256 hex of manifest.pb
  std::string signer_key_id;    // the trusted key that signed; "" when not verified
  bool signature_verified = false;
  uint64_t total_bytes = 0;     // sum of the shard and rank-state file lengths
  // Trainer state; tensors are filled by LoadCheckpoint, left empty by VerifyCheckpoint.
  TrainerSnapshot snapshot;
};

// PATH may be a step directory (holds manifest.pb), a job's `latest` pointer file, or a
// job directory: then `latest` names the step; if `latest` is missing or names a
// directory that does not exist (a crash while replacing a step), the newest committed
// step-N directory is used. A `latest` that names a checkpoint which fails
// verification is refused, not skipped. kNotFound where there is nothing,
// kInvalidArgument for any other file.
StatusOr<std::string> ResolveCheckpointDir(const std::string& path);

// Errors: kPermissionDenied (no signature, bad signature, untrusted key), kDataLoss
// (digest mismatch, truncation, missing or unexpected file), kInvalidArgument (malformed
// manifest or envelope), kNotFound (no checkpoint at PATH). With allow_unsigned a
// missing, unverifiable or untrusted signature is accepted (logged); digests are still
// checked against the manifest. `threads` caps the shards hashed at once (0: one per
// shard, at most the hardware's concurrency).
StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path_or_latest_dir, const TrustStore& trust,
                                          bool allow_unsigned, int threads = 0);

// What a resuming worker needs: rank `rank` of `world` uses only its own rank state, and
// none when the checkpoint was saved at another world size (its codec state is reset
// then). Loading every rank's would cost each of W workers W times the state.
struct OwnRankState {
  int rank = 0;
  int world = 1;
};
// LoadCheckpoint for one rank: the other ranks' rank-state files are checked for
// presence, size and their place in the signed statement, but neither read nor hashed,
// since no byte of them is used; snapshot.rank_tensors holds this rank's alone.
StatusOr<LoadedCheckpoint> LoadCheckpointForRank(const std::string& path_or_latest_dir, const TrustStore& trust,
                                                 bool allow_unsigned, OwnRankState own, int threads = 0);
// The same checks without materialising tensors (streams each shard through SHA-256).
StatusOr<LoadedCheckpoint> VerifyCheckpoint(const std::string& path_or_latest_dir, const TrustStore& trust,
                                            bool allow_unsigned, int threads = 0);

// Envelope checks shared with the fuzzer: parses (and, with a non-null trust store,
// verifies) a checkpoint signature envelope and returns its subjects (name -> sha256).
// Refuses a payload type other than in-toto and subjects that are not lowercase hex.
struct CheckpointSignature {
  std::string key_id;  // "" when not verified
  std::map<std::string, std::string> subjects;
};
StatusOr<CheckpointSignature> ParseCheckpointSignature(const std::string& envelope_json, const TrustStore* trust);

}  // namespace shoal

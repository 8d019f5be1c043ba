// Verified loading. Order matters: the signature against the trust store, then the
// manifest's digest against the signed statement, then that the manifest is for the
// step (and job) its directory claims and that no newer checkpoint of the job is being
// skipped (a rollback), then every shard's digest (shards in parallel), and only then is
// any tensor byte used. Every refusal names the file.
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
  std::string job_dir;          // the directory holding it (its job's, in the <dir>/<job>/step-<N> layout)
  CheckpointManifest manifest;
  std::string manifest_digest;  // SHA-256 hex of manifest.pb
  std::string signer_key_id;    // the trusted key that signed; "" when not verified
  bool signature_verified = false;
  uint64_t total_bytes = 0;     // sum of the shard and rank-state file lengths
  // Trainer state; tensors are filled by LoadCheckpoint, left empty by VerifyCheckpoint.
  TrainerSnapshot snapshot;
  // Set when LoadOptions::allow_rollback let an older checkpoint through: the warning
  // that was logged, naming the step loaded and the newer one skipped.
  std::string rollback_warning;
};

// PATH may be a step directory (holds manifest.pb), a job's `latest` pointer file, or a
// job directory: then `latest` names the step; if `latest` is missing or names a
// directory that does not exist (a crash just before a step's rename, or while
// replacing a step), the newest committed step-N directory is used. A `latest` that names a checkpoint which fails
// verification is refused, not skipped. kNotFound where there is nothing,
// kInvalidArgument for any other file.
StatusOr<std::string> ResolveCheckpointDir(const std::string& path);

// What a resuming worker needs: rank `rank` of `world` uses only its own rank state, and
// none when the checkpoint was saved at another world size (its codec state is reset
// then). Loading every rank's would cost each of W workers W times the state.
struct OwnRankState {
  int rank = 0;
  int world = 1;
};

// How to open a checkpoint, besides the trust store. The overloads that take
// (allow_unsigned, threads) leave the rest at these defaults.
struct LoadOptions {
  // Accept a missing, unverifiable or untrusted signature (logged); digests are still
  // checked against the manifest, and so is everything below.
  bool allow_unsigned = false;
  int threads = 0;                  // files hashed at once; 0: one per file, at most the hardware's concurrency
  std::optional<OwnRankState> own;  // read only this rank's rank state (LoadCheckpointForRank)

  // Substitution. A directory named step-<N> must hold a signed manifest for step N:
  // always checked, so a checkpoint copied under a newer step's name is refused
  // (kDataLoss), naming both. The manifest's job must also be `expected_job` when set,
  // and with `job_from_directory` the name of the directory that holds step-<N> (the
  // <dir>/<job>/step-<N> layout; a checkpoint copied elsewhere under another name than
  // step-<N> claims nothing and is not held to it).
  std::string expected_job;
  bool job_from_directory = false;

  // Rollback. A `latest` pointer that PATH went through must name the newest checkpoint
  // of its job directory that verifies; one naming an older one was turned back. With
  // `resume`, a step directory named directly is held to the same (resuming from it
  // would roll the job back). Newer step-<N> directories are verified newest first (the
  // cost arises only when one exists); one that fails is logged and does not count.
  // Refusals are kFailedPrecondition and name the step asked for and the newer one. A
  // manifest whose parent_digest is a newer checkpoint of the same directory cannot
  // exist and is refused whatever the flags (kDataLoss).
  bool resume = false;
  // The coordinator's registry named this checkpoint as the job's latest (everyone died):
  // the registry is then what "newest known" means, and newer directories it never
  // recorded (a writer killed between committing and registering) are logged, not refused.
  bool chosen_by_registry = false;
  // Load an older checkpoint anyway, logging a warning that names both steps
  // (LoadedCheckpoint::rollback_warning). `shoalctl run --allow-rollback`,
  // checkpoint.allow_rollback in a spec.
  bool allow_rollback = false;
};

// Errors: kPermissionDenied (no signature, bad signature, untrusted key), kDataLoss
// (digest mismatch, truncation, missing or unexpected file, a renamed or substituted
// checkpoint), kFailedPrecondition (a rollback: see LoadOptions), kInvalidArgument
// (malformed manifest or envelope), kNotFound (no checkpoint at PATH).
StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path_or_latest_dir, const TrustStore& trust,
                                          const LoadOptions& options);
StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path_or_latest_dir, const TrustStore& trust,
                                          bool allow_unsigned, int threads = 0);
// LoadCheckpoint for one rank: the other ranks' rank-state files are checked for
// presence, size and their place in the signed statement, but neither read nor hashed,
// since no byte of them is used; snapshot.rank_tensors holds this rank's alone.
StatusOr<LoadedCheckpoint> LoadCheckpointForRank(const std::string& path_or_latest_dir, const TrustStore& trust,
                                                 bool allow_unsigned, OwnRankState own, int threads = 0);
// The same checks without materialising tensors (streams each shard through SHA-256).
StatusOr<LoadedCheckpoint> VerifyCheckpoint(const std::string& path_or_latest_dir, const TrustStore& trust,
                                            const LoadOptions& options);
StatusOr<LoadedCheckpoint> VerifyCheckpoint(const std::string& path_or_latest_dir, const TrustStore& trust,
                                            bool allow_unsigned, int threads = 0);

// What loading would refuse before it reads a shard, for a launcher to refuse a resume
// before any worker starts: the signature, the manifest against it, its step and job
// against the directory's name, the files' presence and sizes, and (with
// options.resume) the rollback checks, which verify any newer checkpoint in full. The
// shards' digests are left to the load.
StatusOr<LoadedCheckpoint> PrecheckCheckpoint(const std::string& path_or_latest_dir, const TrustStore& trust,
                                              const LoadOptions& options);

// The one wording of a rollback, for every source of "newer" (a job directory, the
// coordinator's registry): `what` is the checkpoint asked for ("<dir> (job <job>)" or
// "<job>/latest is turned back: it names <dir>"), at `step`; `newer_step` is known from
// `evidence` ("<dir> verifies", "the coordinator's registry records it"). Without
// allow_rollback: kFailedPrecondition naming both steps and the flag. With it: OK,
// the warning logged and stored in *warning when given.
Status RefuseRollback(const std::string& what, int64_t step, int64_t newer_step, const std::string& evidence,
                      bool allow_rollback, std::string* warning = nullptr);

// Envelope checks shared with the fuzzer: parses (and, with a non-null trust store,
// verifies) a checkpoint signature envelope and returns its subjects (name -> sha256).
// Refuses a payload type other than in-toto and subjects that are not lowercase hex.
struct CheckpointSignature {
  std::string key_id;  // "" when not verified
  std::map<std::string, std::string> subjects;
};
StatusOr<CheckpointSignature> ParseCheckpointSignature(const std::string& envelope_json, const TrustStore* trust);

}  // namespace shoal

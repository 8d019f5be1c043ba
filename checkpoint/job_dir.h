// Housekeeping of one job's checkpoint folder (<dir>/<job>/): listing committed steps,
// the `latest` pointer, retention (keep the last K and every M-th), and removing what a
// crashed writer left behind (step-N.tmp-*, step-N.del-*, latest.tmp-*).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal {

struct RetentionPolicy {
  int keep_last = 0;              // keep the newest K checkpoints; 0 keeps all
  // Also keep every checkpoint whose step is a multiple of this; 0 for none. In steps
  // (not in saves) so the choice survives restarts and deletions; to keep "every M-th
  // checkpoint" of a job saving every S steps, pass M * S.
  int64_t keep_every_steps = 0;
};

// Steps of committed checkpoint directories ("step-<N>" exactly), ascending. A missing
// job directory has none.
StatusOr<std::vector<int64_t>> ListCommittedSteps(const std::string& job_dir);

// The directory name `latest` names ("step-<N>"); kNotFound when there is no pointer,
// kInvalidArgument when it names anything else (it must never lead outside the folder).
StatusOr<std::string> ReadLatestPointer(const std::string& job_dir);
// Points `latest` at step-<N> with a durable atomic write, unless it already names a
// newer committed step (saving an older step never moves it back).
Status UpdateLatestPointer(const std::string& job_dir, int64_t step);

// The steps retention removes from `steps` (ascending). `protect` (the target of
// `latest`) is never removed.
std::vector<int64_t> StepsToDelete(const std::vector<int64_t>& steps, const RetentionPolicy& policy,
                                   std::optional<int64_t> protect);
// Removes those checkpoints. Each is first renamed to step-N.del-<nonce> (and the rename
// made durable), so a crash in the middle of a deletion never leaves a half-deleted
// directory under a committed name.
Status ApplyRetention(const std::string& job_dir, const RetentionPolicy& policy);

// Removes leftovers of crashed writers: staging directories of other runs
// (step-N.tmp-<nonce> with nonce != keep_nonce), half-deleted step-N.del-* and
// latest.tmp-*. The AsyncCheckpointer leader calls this when it starts, so leftovers of
// a killed writer are cleaned by the next writer start. Returns how many were removed.
StatusOr<int> CleanStaleStaging(const std::string& job_dir, const std::string& keep_nonce);

// A fresh random nonce (16 hex digits) for staging names.
std::string RandomNonce();
std::string JoinPath(const std::string& dir, const std::string& name);

}  // namespace shoal

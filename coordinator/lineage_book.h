// The coordinator's lineage records (proto/lineage.proto) in its state store:
//   lineage/job/<job>                  JobLineage: the job's inputs, at submit
//   lineage/gen/<job>/<number>         GenerationLineage: members and hosts, as it forms
//   lineage/ckpt/<job>/<step>          CheckpointLineage: at each checkpoint commit
//   lineage/digest/<manifest digest>   "<job>/<step>": finds a checkpoint by digest
// Job and generation records are chained (lineage/digest.h); the chain head of a
// generation goes to its members in their Assignment and from there into the signed
// manifests of the checkpoints they save.
#pragma once

#include <string>
#include <utility>

#include "common/status.h"
#include "control.pb.h"
#include "coordinator/store.h"

namespace shoal {

class LineageBook {
 public:
  explicit LineageBook(StateStore* store) : store_(store) {}

  // Stores the job's record with its chain root (job.digest is computed here).
  Status RecordJob(JobLineage job);
  // The store entry for generation `g` (its digest chained to the previous one is
  // computed here and returned in *digest), for the caller's atomic write of the
  // generation itself.
  std::pair<std::string, std::string> GenerationEntry(GenerationLineage g, std::string* digest) const;
  // The chain head after generation `number` ("" when it was never recorded).
  std::string HeadOf(const std::string& job_id, int64_t number) const;
  Status RecordCheckpoint(const CheckpointLineage& c);

  // The job's own record (its inputs); kNotFound when it has none.
  StatusOr<JobLineage> JobOf(const std::string& job_id) const;
  // Everything recorded for one job, in order; kNotFound when it has no record.
  StatusOr<JobLineageRecord> Of(const std::string& job_id) const;
  // A job's lineage, or that of the job that saved a checkpoint (digest or a unique
  // prefix of at least 8 hex digits), followed by the jobs of its parent checkpoints.
  StatusOr<LineageResponse> Lookup(const LineageRequest& request) const;

 private:
  StatusOr<std::string> ResolveDigest(const std::string& prefix) const;
  StatusOr<CheckpointLineage> CheckpointByDigest(const std::string& digest) const;
  StateStore* store_;
};

}  // namespace shoal

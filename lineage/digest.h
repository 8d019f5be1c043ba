// The lineage hash chain. A job's record (its inputs) is the chain's root; each
// generation's digest covers the previous digest and the generation's record (members,
// hosts, cause). The head at generation g is what every checkpoint saved in g carries in
// its signed manifest (lineage_digest), so editing any record it depends on afterwards
// changes the head recomputed from the store and is detected (VerifyCheckpointLineage).
//
// Records are hashed in protobuf's deterministic serialization with their own digest
// fields cleared, behind a domain tag, so a job record can never pass for a generation.
#pragma once

#include <string>

#include "common/status.h"
#include "lineage.pb.h"

namespace shoal {

std::string JobLineageDigest(const JobLineage& job);
std::string GenerationLineageDigest(const std::string& previous, const GenerationLineage& generation);

// Recomputes the chain of `record` from its root to generation `upto` (0: the root
// alone) without trusting any stored digest. kDataLoss naming the first record whose
// stored digest differs from its recomputation (edited without re-chaining), or a
// missing generation. Returns the recomputed head.
StatusOr<std::string> RecomputeLineageChain(const JobLineageRecord& record, int64_t upto);

// What `shoalctl lineage verify` decides for one checkpoint: its manifest (signature
// already verified by the caller) against what the store holds.
struct LineageVerdict {
  bool ok = false;
  std::string problem;           // first difference found, naming the record
  int64_t generation = 0;        // the generation the checkpoint was saved in
  std::string signed_digest;     // the manifest's lineage_digest
  std::string recomputed_digest;
};
LineageVerdict VerifyCheckpointLineage(const std::string& manifest_digest, const std::string& job_id, int64_t step,
                                       const std::string& parent_digest, const std::string& lineage_digest,
                                       const JobLineageRecord& record);

}  // namespace shoal

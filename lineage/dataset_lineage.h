// The dataset half of a job's lineage, as the submitter sees it: what `shoalctl run` and
// `shoalctl submit` send with the spec (SubmitRequest.lineage). For a signed dataset:
// the manifest's digest and signer, every shard with its digest, the sources, the scan
// that admitted the records (each filter's switch, threshold, version and count) and a
// person's review overlay. For IDX files: the files and their digests.
#pragma once

#include <string>

#include "common/status.h"
#include "jobspec.pb.h"
#include "lineage.pb.h"

namespace shoal {

// `split` picks an IDX folder's files ("train" or "t10k": the files whose names start
// with it, as the loader reads them); a signed dataset is whole.
StatusOr<LineageDataset> DescribeDataset(const std::string& dir, const DataSpec& data, const std::string& split);

// The job's inputs for SubmitRequest.lineage: the training and test datasets and this
// binary's code. A dataset that cannot be described is logged and left with its dir
// only: the coordinator refuses nothing for it (the workers refuse bad data).
JobLineage SubmitterLineage(const JobSpec& spec);

}  // namespace shoal

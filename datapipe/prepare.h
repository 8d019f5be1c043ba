// One call for a job's set-up: make sure an IDX source has been ingested into a signed
// dataset folder and scanned, reusing both when they are already there and current. A
// folder that exists but fails verification is an error, never silently re-ingested.
#pragma once

#include <cstdint>
#include <string>

#include "common/signing.h"
#include "common/status.h"
#include "datapipe/scan.h"

namespace shoal {

struct PrepareOptions {
  std::string idx_dir;                // <split>-images-idx3-ubyte[.gz] and the labels
  std::string split = "train";        // "train" or "t10k"
  std::string out_dir;                // the dataset folder to create or reuse
  const KeyPair* sign_key = nullptr;  // owner key for a new ingest (or sign_key_path)
  std::string sign_key_path;
  std::string name;                   // manifest name for a new ingest
  std::string licence;
  int64_t shard_records = 10000;
  ScanOptions scan;                   // filters and trust (ScanOptionsFromSpec + trust)
  bool rescan = false;                // scan again even if a current scan exists
};

struct PreparedDataset {
  std::string dir;
  bool ingested = false;  // by this call
  bool scanned = false;   // by this call
  int64_t records = 0, admitted = 0, quarantined = 0;
  std::string provenance;
};

StatusOr<PreparedDataset> PrepareIdxDataset(const PrepareOptions& options);

}  // namespace shoal

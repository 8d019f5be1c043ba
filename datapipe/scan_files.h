// What a scan leaves in DIR/scan/: admitted.idx (the sorted ids of admitted records,
// bound to the manifest's digest so a stale scan is refused), quarantine.jsonl (one line
// per record and filter, with the reason) and report.json. Raw shards are never touched.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal {

inline constexpr char kScanDir[] = "scan";
inline constexpr char kAdmittedFile[] = "admitted.idx";
inline constexpr char kQuarantineFile[] = "quarantine.jsonl";
inline constexpr char kScanReportFile[] = "report.json";

// admitted.idx, little-endian: "SHOALADM", u32 version (1), u32 0, u64 count,
// u64 total records in the dataset, 32 B raw SHA-256 of manifest.pb, count x u64 ids
// (strictly increasing, < total), then 32 B SHA-256 of everything before it.
struct AdmittedIndex {
  std::string manifest_sha256;  // hex
  int64_t total_records = 0;
  std::vector<int64_t> ids;
};
std::string EncodeAdmitted(const AdmittedIndex& index);
StatusOr<AdmittedIndex> DecodeAdmitted(const std::string& bytes, const std::string& name);
// NotFound when DIR has no scan; other errors when the file is damaged.
StatusOr<AdmittedIndex> ReadAdmitted(const std::string& dataset_dir);

struct QuarantineEntry {
  int64_t record_id = 0;
  std::string shard;       // shard file holding the record
  int64_t index = 0;       // position inside that shard
  int32_t label = 0;
  std::string filter;      // schema | exact | near | outliers | label
  std::string reason;
  double score = 0;        // filter-specific strength (z, vote share, distance ...)
};
std::string QuarantineJsonLine(const QuarantineEntry& e);  // no trailing newline
// Reads DIR/scan/quarantine.jsonl; `filter` "" keeps all; limit < 0 means no limit.
StatusOr<std::vector<QuarantineEntry>> ReadQuarantine(const std::string& dataset_dir, const std::string& filter = "",
                                                      int64_t limit = -1);

}  // namespace shoal

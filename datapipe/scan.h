// The scan: runs the poisoning filters over every record of a verified dataset and
// writes DIR/scan/ (admitted ids, quarantine list with reasons, report). Options come
// from the job spec's data.filters or the CLI; a threshold of 0 means the default.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "datapipe/filters.h"
#include "datapipe/manifest.h"
#include "datapipe/scan_files.h"
#include "jobspec.pb.h"

namespace shoal {

// Filter names, in the order they run and appear in reports.
inline constexpr const char* kFilterNames[] = {"schema", "exact", "near", "outliers", "label"};
// Each filter's algorithm version, recorded in the scan report: a scan made by another
// version is refused by CheckScanMatchesFilters (scan_check.h) until DIR is re-scanned.
// near 3: candidates from shift and zoom probes of one view per image (2 searched four
// views; 1 was SimHash + raw RMS); label 2: confident learning with a similar-class
// guard (1 was a neighbour vote); label 3 adds the search for label-flip campaigns
// between class pairs by out-of-fold model probabilities (filter_model.cc); label 4
// accuses a record of a backdoor only where its trigger is shared (SharedTriggers).
inline constexpr int kFilterVersions[] = {1, 1, 3, 1, 4};
// The job spec's names for the same filters (data.filters.<name>).
inline constexpr const char* kFilterSpecNames[] = {"schema", "exact_duplicates", "near_duplicates", "outliers",
                                                   "label_consistency"};

struct ScanOptions {
  bool schema = true, exact = true, near = true, outliers = true, label = true;
  double schema_tolerance = 0;  // absolute slack outside the declared range; 0: 1e-6
  double near_max_rms = 0;      // RMS feature distance for a near duplicate; 0: 0.04
  double outlier_z = 0;         // robust z cut; 0: 8 (3.5 held back 1.2% of clean Fashion-MNIST, 6 0.15%)
  double label_margin = 0;      // p(likely class) - p(given label) for a label error; 0: 0.3
  int label_k = 10;             // neighbours behind each record's class probabilities
  int label_rounds = 3;         // cleaning rounds of the label filter
  double label_min_llr = 0.8;   // share of a typical member's log-likelihood ratio a label error needs
  double label_similar_llr = 1.5;  // the same between similar classes (shirt, T-shirt): ambiguity
  int label_views = 2;          // 2: vote again with trigger-like feature values neutralised
  int label_campaign_rounds = 3;   // out-of-fold model rounds of the flip-campaign search; 0: no search
  double label_pair_rate = 0.1;    // share of a class confidently another class that makes a campaign
  double label_trigger_share = 0.005;  // backdoor: share of the label whose accused records share the values; 0: none
  int projection_dims = 32;
  ProjectionKind projection = ProjectionKind::kPca;
  int threads = 0;              // 0: every core
  uint64_t seed = 0x5C4A11;     // projections and k-means: fixed, so scans repeat exactly
  DatasetTrust trust{TrustStore(), /*allow_unsigned=*/true};  // shards are digest-checked regardless
  std::function<void(const std::string&)> progress;          // one line per phase (stderr in the CLI)

  double SchemaTolerance() const { return schema_tolerance > 0 ? schema_tolerance : 1e-6; }
  double NearMaxRms() const { return near_max_rms > 0 ? near_max_rms : 0.04; }
  double OutlierZ() const { return outlier_z > 0 ? outlier_z : 8.0; }
  double LabelMargin() const { return label_margin > 0 ? label_margin : 0.3; }
};

// data.filters -> options (enabled switches and thresholds, 0 keeping the default).
ScanOptions ScanOptionsFromSpec(const DataFilters& filters);
// "schema,exact,near" enables exactly those filters; "all" or "" enables every one.
Status SetFilterList(const std::string& list, ScanOptions* options);
// "near=0.05", "outliers=3", "label=0.7", "label_k=15", "schema=1e-3", "dims=48",
// "label_rounds=3", "label_views=1", "label_llr=0.8", "label_similar_llr=1.5",
// "label_campaign_rounds=0" (no flip-campaign search), "label_pair_rate=0.1",
// "label_trigger_share=0" (backdoor accusations need no shared trigger),
// "pca=0" (random projection, not randomized PCA).
Status SetThreshold(const std::string& assignment, ScanOptions* options);

struct FilterReport {
  std::string name;
  bool enabled = false;
  double threshold = 0;  // as resolved (defaults applied)
  int version = 0;
  // The filter's other settings, which a job spec cannot name and so expects at their
  // defaults: "name=value" pairs separated by spaces, as --threshold takes them, e.g.
  // "dims=32 pca=1 label_k=10 ... label_views=2". Empty for filters without any.
  std::string settings;
  int64_t flagged = 0;
  double seconds = 0;
};

// Each filter's switch, resolved threshold and version under these options (counts 0).
std::vector<FilterReport> ResolvedFilters(const ScanOptions& options);

// Filters applied to a table in memory: no files (tests and the poison benchmark).
struct TableScan {
  std::vector<FilterReport> filters;         // kFilterNames order
  std::vector<QuarantineEntry> quarantine;   // by record id, then filter order
  std::vector<int64_t> admitted_rows;        // rows no filter flagged, ascending
  double project_seconds = 0;
  double knn_seconds = 0;
  double seconds = 0;
};
TableScan ScanTable(const RecordTable& table, const ScanOptions& options);

struct ScanReport {
  std::string dir, dataset, manifest_sha256, provenance;
  int64_t records = 0, admitted = 0, quarantined = 0;
  std::vector<FilterReport> filters;
  int threads = 0;
  double verify_seconds = 0, filter_seconds = 0, project_seconds = 0, knn_seconds = 0, write_seconds = 0;
  double seconds = 0;             // everything: verify, filters, writing
  double cpu_seconds = 0;         // process CPU time (user + system) over the same span
  double records_per_second = 0;  // records / seconds
  std::string ToJson() const;
};

// Verifies DIR (shard digests always; signature per options.trust), scans it, and
// replaces DIR/scan/ as a whole (written aside, then renamed) so readers never see
// a mix of two scans.
StatusOr<ScanReport> ScanDataset(const std::string& dir, const ScanOptions& options);

}  // namespace shoal

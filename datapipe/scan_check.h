// The spec decides which filters guard a job: the scan's report records every filter's
// switch, threshold and version, and a job whose data.filters resolve differently (or
// whose scan ran an older filter version) is refused with the difference named and the
// command that re-scans to match.
#pragma once

#include <string>

#include "common/status.h"
#include "datapipe/scan.h"
#include "jobspec.pb.h"

namespace shoal {

// Reads DIR/scan/report.json back (treated as hostile input). NotFound when DIR has no
// scan; a report from before filter versions were recorded reads as version 1.
StatusOr<ScanReport> ReadScanReport(const std::string& dataset_dir);

// The `shoalctl data scan` command line that scans DIR with exactly these filters.
std::string ScanCommandFor(const std::string& dataset_dir, const DataFilters& filters);

// OK when every filter is switched the same way in the spec and the scan, each enabled
// filter ran with the threshold the spec resolves to (0: the default), at the version
// this build runs, and with every other setting (FilterReport::settings, which a spec
// cannot name) at its default. Otherwise FailedPrecondition naming each difference, e.g.
// "data.filters.label_consistency.threshold is 0.7 in the job spec but the scan of DIR
// ran 0.5", followed by the ScanCommandFor() to run.
Status CheckScanMatchesFilters(const ScanReport& report, const DataFilters& filters);
// ReadScanReport + CheckScanMatchesFilters. A dataset without a scan is refused too
// (NotFound, with the command), since data.filters cannot be honoured without one.
Status CheckDatasetScanMatchesSpec(const std::string& dataset_dir, const DataFilters& filters);

// What a job needs before it trains on a signed dataset (data.format shards, or auto
// with a manifest): the check above, when any filter is on or the dataset has a scan
// (a scan with every filter off in the spec is a difference too). IDX data has no scan.
Status CheckJobDataMatchesScan(const JobSpec& spec);
// Re-scans the job's dataset with the spec's filters (shoalctl run --rescan).
StatusOr<ScanReport> RescanForSpec(const JobSpec& spec);

}  // namespace shoal

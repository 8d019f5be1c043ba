// Prometheus metrics for `GET /metrics`: the jobs and workers a StatusResponse lists, in
// the text exposition format 0.0.4 (# HELP and # TYPE per family, samples grouped by
// family, counters ending in _total, label values escaped).
#pragma once

#include <cstdint>
#include <string>

#include "control.pb.h"

namespace shoal {

// Ended jobs stay in the output this long after they ended, so that a scraper sees
// their last values; then they go (the coordinator keeps every job forever).
constexpr int64_t kEndedJobMetricsMs = 10 * 60 * 1000;

std::string PrometheusText(const StatusResponse& status);

// A label value as the format wants it: backslash, double quote and newline escaped.
std::string EscapeLabelValue(const std::string& value);

}  // namespace shoal

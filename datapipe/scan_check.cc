// Reading a scan's report back and comparing it with a job's data.filters. Thresholds
// are compared after defaults are applied on both sides, with a relative tolerance for
// the round trip through JSON.
#include "datapipe/scan_check.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "datapipe/loader.h"
#include "datapipe/scan_files.h"

namespace shoal {

namespace {
constexpr size_t kMaxReportBytes = 1 << 20;

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

bool SameThreshold(double a, double b) { return std::abs(a - b) <= 1e-9 * std::max({1.0, std::abs(a), std::abs(b)}); }

// "a=1 b=2" -> {a: "1", b: "2"}.
std::map<std::string, std::string> ParseSettings(const std::string& settings) {
  std::map<std::string, std::string> out;
  std::istringstream in(settings);
  std::string pair;
  while (in >> pair) {
    const size_t eq = pair.find('=');
    out[pair.substr(0, eq)] = eq == std::string::npos ? "" : pair.substr(eq + 1);
  }
  return out;
}

// Each setting the scan ran differently from what the job expects, "label_views=1 (the
// job expects 2)"; a setting the scan did not record counts as different.
std::vector<std::string> SettingDiffs(const std::string& got, const std::string& want) {
  const auto g = ParseSettings(got), w = ParseSettings(want);
  std::vector<std::string> out;
  for (const auto& [key, value] : w) {
    auto it = g.find(key);
    if (it == g.end()) out.push_back(key + " unrecorded (the job expects " + value + ")");
    else if (it->second != value) out.push_back(key + "=" + it->second + " (the job expects " + value + ")");
  }
  for (const auto& [key, value] : g)
    if (!w.count(key)) out.push_back(key + "=" + value + " (unknown to this build)");
  return out;
}
}  // namespace

StatusOr<ScanReport> ReadScanReport(const std::string& dir) {
  const std::string path = dir + "/" + kScanDir + "/" + kScanReportFile;
  if (!PathExists(path))
    return NotFound(dir + " has not been scanned (no " + kScanDir + "/" + kScanReportFile + "); run `shoalctl data scan " +
                    dir + "`");
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxReportBytes));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  auto bad = [&](const std::string& what) {
    return DataLoss(path + " is malformed (" + what + "); re-run `shoalctl data scan " + dir + "`");
  };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (!j.contains("filters") || !j["filters"].is_array()) return bad("no filters list");
  ScanReport r;
  r.dir = dir;
  if (j.contains("manifest_sha256") && j["manifest_sha256"].is_string()) r.manifest_sha256 = j["manifest_sha256"];
  if (j.contains("dataset") && j["dataset"].is_string()) r.dataset = j["dataset"];
  for (const char* key : {"records", "admitted", "quarantined"})
    if (!j.contains(key) || !j[key].is_number_integer()) return bad(std::string("no integer '") + key + "'");
  r.records = j["records"].get<int64_t>();
  r.admitted = j["admitted"].get<int64_t>();
  r.quarantined = j["quarantined"].get<int64_t>();
  for (const auto& f : j["filters"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("enabled") ||
        !f["enabled"].is_boolean() || !f.contains("threshold") || !f["threshold"].is_number())
      return bad("a filter entry lacks name, enabled or threshold");
    FilterReport fr;
    fr.name = f["name"].get<std::string>();
    fr.enabled = f["enabled"].get<bool>();
    fr.threshold = f["threshold"].get<double>();
    // Reports written before versions were recorded came from version 1 of every filter.
    fr.version = f.contains("version") && f["version"].is_number_integer() ? f["version"].get<int>() : 1;
    if (f.contains("flagged") && f["flagged"].is_number_integer()) fr.flagged = f["flagged"].get<int64_t>();
    if (f.contains("settings") && f["settings"].is_string()) fr.settings = f["settings"].get<std::string>();
    r.filters.push_back(std::move(fr));
  }
  return r;
}

std::string ScanCommandFor(const std::string& dir, const DataFilters& filters) {
  const ScanOptions o = ScanOptionsFromSpec(filters);
  const std::vector<FilterReport> want = ResolvedFilters(o);
  std::string list, thresholds;
  for (const auto& f : want) {
    if (!f.enabled) continue;
    list += (list.empty() ? "" : ",") + f.name;
    if (f.name != "exact") thresholds += " --threshold " + f.name + "=" + Num(f.threshold);
  }
  return "shoalctl data scan " + dir + " --filters " + (list.empty() ? "none" : list) + thresholds;
}

Status CheckScanMatchesFilters(const ScanReport& report, const DataFilters& filters) {
  const std::vector<FilterReport> want = ResolvedFilters(ScanOptionsFromSpec(filters));
  std::vector<std::string> diffs;
  for (size_t i = 0; i < want.size(); ++i) {
    const FilterReport& w = want[i];
    const std::string field = std::string("data.filters.") + kFilterSpecNames[i];
    const FilterReport* got = nullptr;
    for (const auto& f : report.filters)
      if (f.name == w.name) got = &f;
    if (!got) {
      diffs.push_back(field + " is missing from the scan's report");
      continue;
    }
    if (got->enabled != w.enabled) {
      diffs.push_back(field + ".enabled is " + (w.enabled ? "true" : "false") + " in the job spec but the scan ran it " +
                      (got->enabled ? "on" : "off"));
      continue;
    }
    if (!w.enabled) continue;
    if (w.name != "exact" && !SameThreshold(got->threshold, w.threshold))
      diffs.push_back(field + ".threshold is " + Num(w.threshold) + " in the job spec (0 means the default) but the scan ran " +
                      Num(got->threshold));
    if (got->version != w.version)
      diffs.push_back(field + " ran at filter version " + std::to_string(got->version) + " but this build runs version " +
                      std::to_string(w.version));
    for (const std::string& d : SettingDiffs(got->settings, w.settings))
      diffs.push_back(field + " ran with " + d + "; the job spec cannot set it, so only its default is accepted");
  }
  if (diffs.empty()) return OkStatus();
  std::string msg = "the scan of " + report.dir + " does not match the job's data.filters: ";
  for (size_t i = 0; i < diffs.size(); ++i) msg += (i ? "; " : "") + diffs[i];
  msg += ". Re-scan with `" + ScanCommandFor(report.dir, filters) + "`";
  return FailedPrecondition(msg);
}

Status CheckDatasetScanMatchesSpec(const std::string& dir, const DataFilters& filters) {
  auto report = ReadScanReport(dir);
  if (!report.ok()) {
    if (report.status().code() == StatusCode::kNotFound)
      return NotFound(dir + " has not been scanned, so its data.filters cannot be honoured; run `" +
                      ScanCommandFor(dir, filters) + "`");
    return report.status();
  }
  return CheckScanMatchesFilters(*report, filters);
}

namespace {
bool SignedDataset(const JobSpec& spec) {
  const std::string& dir = spec.data().dataset();
  return spec.data().format() == "shards" ||
         (spec.data().format() == "auto" && std::filesystem::exists(dir + "/manifest.pb"));
}
}  // namespace

Status CheckJobDataMatchesScan(const JobSpec& spec) {
  if (!SignedDataset(spec)) return OkStatus();
  const DataFilters& f = spec.data().filters();
  const bool any = f.schema().enabled() || f.exact_duplicates().enabled() || f.near_duplicates().enabled() ||
                   f.outliers().enabled() || f.label_consistency().enabled();
  if (!any && !std::filesystem::exists(spec.data().dataset() + "/scan")) return OkStatus();
  return CheckDatasetScanMatchesSpec(spec.data().dataset(), f);
}

StatusOr<ScanReport> RescanForSpec(const JobSpec& spec) {
  ScanOptions o = ScanOptionsFromSpec(spec.data().filters());
  ASSIGN_OR_RETURN(o.trust, TrustFromSpec(spec.data()));
  return ScanDataset(spec.data().dataset(), o);
}

}  // namespace shoal

// OpenLineage events (openlineage.h).
#include "lineage/openlineage.h"

#include <time.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/sha256.h"

namespace shoal {

namespace {
using nlohmann::json;

constexpr char kSchemaUrl[] = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
constexpr char kFacets[] = "https://openlineage.io/spec/facets/";
constexpr char kShoalFacets[] = "https://github.com/shoal-ml/shoal/blob/main/docs/openlineage-facets.md#";

std::string Iso8601(int64_t unix_ms) {
  time_t t = unix_ms / 1000;
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof(out), "%s.%03dZ", buf, static_cast<int>(unix_ms % 1000));
  return out;
}

std::string Producer(const JobLineage& job) {
  const std::string v = job.coordinator_code().version();
  return "https://github.com/shoal-ml/shoal/tree/" + (v.empty() ? std::string("unknown") : v);
}

json Facet(const std::string& producer, const std::string& schema_url) {
  return json{{"_producer", producer}, {"_schemaURL", schema_url}};
}
json Standard(const std::string& producer, const std::string& file, const std::string& name) {
  return Facet(producer, std::string(kFacets) + file + ".json#/$defs/" + name);
}

std::string AbsolutePath(const std::string& p) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(p, ec);
  return ec ? p : abs.lexically_normal().string();
}

json DatasetJson(const LineageDataset& d, const std::string& producer, bool training) {
  json facets = json::object();
  facets["schema"] = Standard(producer, "1-1-1/SchemaDatasetFacet", "SchemaDatasetFacet");
  facets["schema"]["fields"] = json::array({{{"name", "features"}, {"type", "tensor"}, {"description", d.schema()}},
                                            {{"name", "label"}, {"type", "integer"}}});
  if (!d.manifest_digest().empty()) {
    facets["version"] = Standard(producer, "1-0-1/DatasetVersionDatasetFacet", "DatasetVersionDatasetFacet");
    facets["version"]["datasetVersion"] = d.manifest_digest();
  }
  facets["dataSource"] = Standard(producer, "1-0-1/DatasourceDatasetFacet", "DatasourceDatasetFacet");
  facets["dataSource"]["name"] = d.name().empty() ? d.dir() : d.name();
  facets["dataSource"]["uri"] = "file://" + AbsolutePath(d.dir());
  json shoal = Facet(producer, std::string(kShoalFacets) + "ShoalDatasetFacet");
  shoal["format"] = d.format();
  shoal["signer"] = d.signer();
  shoal["shards"] = json::array();
  for (const LineageShard& s : d.shards())
    shoal["shards"].push_back({{"file", s.file()}, {"sha256", s.sha256()}, {"records", s.records()}});
  shoal["sources"] = json::array();
  for (const LineageSource& s : d.sources()) shoal["sources"].push_back({{"uri", s.uri()}, {"sha256", s.sha256()}});
  facets["shoal_dataset"] = shoal;

  json out = {{"namespace", "file"}, {"name", AbsolutePath(d.dir())}, {"facets", facets}};
  if (training && d.has_scan()) {
    const LineageScan& s = d.scan();
    json input_facets = json::object();
    json dq = Standard(producer, "1-0-2/DataQualityMetricsInputDatasetFacet", "DataQualityMetricsInputDatasetFacet");
    dq["rowCount"] = s.admitted();
    dq["columnMetrics"] = {{"label", {{"nullCount", 0}, {"count", s.admitted()}}}};
    input_facets["dataQualityMetrics"] = dq;
    json assertions = Standard(producer, "1-0-1/DataQualityAssertionsDatasetFacet", "DataQualityAssertionsDatasetFacet");
    assertions["assertions"] = json::array();
    for (const LineageFilter& f : s.filters())
      if (f.enabled())
        // The admitted records pass each filter: what it flagged is quarantined.
        assertions["assertions"].push_back({{"assertion", "shoal filter " + f.name() + " v" + f.version()},
                                            {"success", true}});
    input_facets["dataQualityAssertions"] = assertions;
    json scan = Facet(producer, std::string(kShoalFacets) + "ShoalScanInputDatasetFacet");
    scan["records"] = s.records();
    scan["admitted"] = s.admitted();
    scan["quarantined"] = s.quarantined();
    scan["reportSha256"] = s.report_digest();
    scan["admittedSha256"] = s.admitted_digest();
    scan["reviewOverlaySha256"] = s.review_overlay_digest();
    scan["filters"] = json::array();
    for (const LineageFilter& f : s.filters())
      scan["filters"].push_back({{"name", f.name()}, {"enabled", f.enabled()}, {"threshold", f.threshold()},
                                 {"version", f.version()}, {"settings", f.settings()}, {"flagged", f.flagged()}});
    input_facets["shoal_scan"] = scan;
    out["inputFacets"] = input_facets;
  }
  return out;
}

json CheckpointJson(const CheckpointLineage& c, const std::string& producer) {
  json facets = json::object();
  facets["version"] = Standard(producer, "1-0-1/DatasetVersionDatasetFacet", "DatasetVersionDatasetFacet");
  facets["version"]["datasetVersion"] = c.manifest_digest();
  json shoal = Facet(producer, std::string(kShoalFacets) + "ShoalCheckpointDatasetFacet");
  shoal["step"] = c.step();
  shoal["generation"] = c.generation();
  shoal["signer"] = c.signer_key_id();
  shoal["parentSha256"] = c.parent_digest();
  shoal["lineageDigest"] = c.lineage_digest();
  shoal["samples"] = c.samples();
  facets["shoal_checkpoint"] = shoal;
  return {{"namespace", "file"}, {"name", AbsolutePath(c.path())}, {"facets", facets}};
}
}  // namespace

std::string OpenLineageRunId(const std::string& job_id) {
  // Name-based UUID (RFC 9562 layout, version 8: a custom hash) of the job id.
  const std::string h = Sha256Hex("shoal-run:" + job_id);
  std::string u = h.substr(0, 8) + "-" + h.substr(8, 4) + "-8" + h.substr(13, 3) + "-";
  const int variant = 0x8 | (std::stoi(h.substr(16, 1), nullptr, 16) & 0x3);
  static const char* hex = "0123456789abcdef";
  u += hex[variant];
  u += h.substr(17, 3) + "-" + h.substr(20, 12);
  return u;
}

std::string BuildOpenLineageEvent(const LineageEventInput& in) {
  const std::string producer = Producer(in.job);
  json run_facets = json::object();
  json engine = Standard(producer, "1-1-1/ProcessingEngineRunFacet", "ProcessingEngineRunFacet");
  engine["version"] = in.job.coordinator_code().version();
  engine["name"] = "shoal";
  run_facets["processing_engine"] = engine;
  if (in.generation) {
    json g = Facet(producer, std::string(kShoalFacets) + "ShoalGenerationRunFacet");
    g["number"] = in.generation->number();
    g["cause"] = in.generation->cause();
    g["lineageDigest"] = in.generation->digest();
    g["members"] = json::array();
    for (const LineageMember& m : in.generation->members())
      g["members"].push_back({{"rank", m.rank()}, {"id", m.id()}, {"host", m.host()}, {"pid", m.pid()}});
    run_facets["shoal_generation"] = g;
  }
  if (!in.error.empty()) {
    json e = Standard(producer, "1-0-1/ErrorMessageRunFacet", "ErrorMessageRunFacet");
    e["message"] = in.error;
    e["programmingLanguage"] = "C++";
    run_facets["errorMessage"] = e;
  }
  json labels = Facet(producer, std::string(kShoalFacets) + "ShoalJobRunFacet");
  labels["jobId"] = in.job.job_id();
  labels["specSha256"] = in.job.spec_digest();
  labels["owner"] = in.job.owner();
  labels["labels"] = json::object();
  for (const auto& [k, v] : in.job.labels()) labels["labels"][k] = v;
  if (!in.final_state.empty()) labels["state"] = in.final_state;
  run_facets["shoal_job"] = labels;

  json job_facets = json::object();
  json type = Standard(producer, "2-0-3/JobTypeJobFacet", "JobTypeJobFacet");
  type["processingType"] = "BATCH";
  type["integration"] = "SHOAL";
  type["jobType"] = "TRAINING";
  job_facets["jobType"] = type;

  json inputs = json::array();
  if (!in.job.dataset().dir().empty()) inputs.push_back(DatasetJson(in.job.dataset(), producer, true));
  if (!in.job.test_dataset().dir().empty()) inputs.push_back(DatasetJson(in.job.test_dataset(), producer, false));
  json outputs = json::array();
  for (const CheckpointLineage& c : in.outputs) outputs.push_back(CheckpointJson(c, producer));

  json event = {{"eventType", in.event_type},
                {"eventTime", Iso8601(in.unix_ms)},
                {"producer", producer},
                {"schemaURL", kSchemaUrl},
                {"run", {{"runId", OpenLineageRunId(in.job.job_id())}, {"facets", run_facets}}},
                {"job", {{"namespace", in.job_namespace}, {"name", in.job.name().empty() ? in.job.job_id() : in.job.name()},
                         {"facets", job_facets}}},
                {"inputs", inputs},
                {"outputs", outputs}};
  return event.dump();
}

}  // namespace shoal

// `shoalctl trace JOB -o trace.json`: merges the ranks' timeline trace files (written by
// each worker when the spec's trace range ends, worker/trace.h) into one Chrome /
// Perfetto trace on the coordinator's clock: each file carries its rank's estimated
// offset to that clock (from heartbeats), which is added to its timestamps here.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/commands.h"
#include "common/file_util.h"
#include "coordinator/client.h"
#include "coordinator/coordinator.h"
#include "spec/trace_paths.h"

namespace shoal {
namespace {

using nlohmann::json;

struct TraceCommandOptions {
  std::string job_id, output, dir, coordinator;
  bool json = false;
  double timeout_s = 5;
};

// One rank's file, parsed and checked.
struct RankTrace {
  std::string file;
  json doc;
  int rank = 0;
  int64_t offset_us = 0, uncertainty_us = 0;
};

// Where the job's trace files are, from the job's spec (or --dir); `why_none` gathers
// what to say if the folder holds no files.
struct TraceSource {
  std::string dir;
  std::string why_none;
};

StatusOr<TraceSource> FindTraceDir(const TraceCommandOptions& o) {
  if (!o.dir.empty()) {
    // --dir names the trace root (trace.dir) or the job's own folder in it.
    const std::string job_dir = o.dir + "/" + o.job_id;
    return TraceSource{std::filesystem::is_directory(job_dir) ? job_dir : o.dir, ""};
  }
  ControlClient client(o.coordinator.empty() ? DefaultCoordinator() : o.coordinator);
  Request r;
  r.mutable_status()->set_job_id(o.job_id);
  auto resp = client.Call(r, std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
  if (!resp.ok()) {
    // `shoalctl run`'s coordinator stops with it: its workers' default folder, if here.
    const std::string local = ".shoal/traces/" + o.job_id;
    if (resp.status().code() == StatusCode::kUnavailable && std::filesystem::is_directory(local))
      return TraceSource{local, "the coordinator did not answer; read " + local};
    return resp.status().WithContext("asking the coordinator for job " + o.job_id + "'s spec (or pass --dir)");
  }
  if (resp->status().jobs_size() != 1) return NotFound("no job " + o.job_id);
  const Job& job = resp->status().jobs(0);
  const JobSpec& spec = job.spec();
  if (!TraceEnabled(spec))
    return FailedPrecondition("job " + o.job_id +
                              " traces nothing: its spec has no trace range (trace.step_end is 0); run it with e.g. "
                              "--set trace.step_begin=100 --set trace.step_end=120");
  TraceSource src;
  src.dir = TraceJobDir(spec, o.job_id);
  int64_t step = 0;
  for (const Member& m : resp->status().members()) step = std::max<int64_t>(step, m.metrics().step());
  const std::string range =
      "[" + std::to_string(spec.trace().step_begin()) + ", " + std::to_string(spec.trace().step_end()) + ")";
  const std::string state = JobStateName(job.state());
  if (IsTerminal(job.state()) && step < spec.trace().step_begin())
    src.why_none = "the job is " + state + " at step " + std::to_string(step) + ", before the trace range " + range;
  else if (!IsTerminal(job.state()) && step < spec.trace().step_end())
    src.why_none = "the job is " + state + " at step " + std::to_string(step) + "; the ranks write their files when " +
                   "the range " + range + " ends";
  else
    src.why_none = "the job is " + state + " at step " + std::to_string(step) + " (trace range " + range +
                   "); the workers write there relative to their working directory unless trace.dir is absolute: run "
                   "this where they ran, or pass --dir";
  return src;
}

StatusOr<RankTrace> ReadRankTrace(const std::string& file) {
  // A rank's file is a few MB for a few hundred steps; 1 GiB is far past any real one.
  ASSIGN_OR_RETURN(std::string text, ReadFile(file, size_t{1} << 30));
  RankTrace t;
  t.file = file;
  t.doc = json::parse(text, nullptr, false);
  if (t.doc.is_discarded() || !t.doc.is_object() || !t.doc.contains("traceEvents") ||
      !t.doc["traceEvents"].is_array() || !t.doc.contains("otherData") || !t.doc["otherData"].is_object())
    return DataLoss("trace file " + file + " is truncated or corrupt (not a complete Shoal rank trace)");
  const json& other = t.doc["otherData"];
  auto integer = [&](const char* key, int64_t* out) -> Status {
    if (!other.contains(key) || !other[key].is_number_integer())
      return DataLoss("trace file " + file + " is corrupt: otherData." + key + " is missing or not an integer");
    *out = other[key].get<int64_t>();
    return OkStatus();
  };
  int64_t rank = 0;
  RETURN_IF_ERROR(integer("rank", &rank));
  RETURN_IF_ERROR(integer("clock_offset_us", &t.offset_us));
  RETURN_IF_ERROR(integer("clock_uncertainty_us", &t.uncertainty_us));
  t.rank = static_cast<int>(rank);
  for (const json& e : t.doc["traceEvents"]) {
    if (!e.is_object() || !e.contains("ph") || !e.contains("pid"))
      return DataLoss("trace file " + file + " is corrupt: an event without ph or pid");
    if (e["ph"] == "X" && (!e.contains("ts") || !e["ts"].is_number() || !e.contains("dur") || !e["dur"].is_number()))
      return DataLoss("trace file " + file + " is corrupt: a complete event without ts or dur");
  }
  return t;
}

// Span kinds, summed: how many and how long, for the summary.
struct KindTotal {
  int64_t count = 0;
  double total_us = 0;
};

int DoTrace(const TraceCommandOptions& o) {
  auto source = FindTraceDir(o);
  if (!source.ok()) return ReportError(source.status());
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(source->dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.size() > std::strlen(kTraceFileSuffix) &&
        name.compare(name.size() - std::strlen(kTraceFileSuffix), std::string::npos, kTraceFileSuffix) == 0)
      files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  if (files.empty())
    return ReportError(NotFound("no trace files (*" + std::string(kTraceFileSuffix) + ") in " + source->dir +
                                (source->why_none.empty() ? "" : ": " + source->why_none)));

  std::vector<RankTrace> ranks;
  for (const std::string& f : files) {
    auto t = ReadRankTrace(f);
    if (!t.ok()) return ReportError(t.status());
    ranks.push_back(std::move(*t));
  }
  // One track per file: its rank, unless another file has it already (a member that
  // died and its replacement), which then goes past every rank.
  std::set<int> taken;
  int spare = 1000;
  std::vector<int> pids;
  for (const RankTrace& t : ranks) {
    int pid = taken.count(t.rank) ? spare++ : t.rank;
    taken.insert(pid);
    pids.push_back(pid);
  }
  // The coordinator's clock: ts + offset. Times start at the first event, in µs.
  int64_t origin = INT64_MAX, end = INT64_MIN;
  for (const RankTrace& t : ranks)
    for (const json& e : t.doc["traceEvents"])
      if (e["ph"] == "X") {
        origin = std::min(origin, e["ts"].get<int64_t>() + t.offset_us);
        end = std::max(end, e["ts"].get<int64_t>() + e["dur"].get<int64_t>() + t.offset_us);
      }
  if (origin == INT64_MAX) origin = end = 0;

  json merged = json::array();
  json rank_info = json::array();
  std::map<std::string, KindTotal> kinds;
  int64_t spans = 0, max_uncertainty = 0;
  for (size_t i = 0; i < ranks.size(); ++i) {
    const RankTrace& t = ranks[i];
    for (json e : t.doc["traceEvents"]) {
      e["pid"] = pids[i];
      if (e["ph"] == "X") {
        e["ts"] = e["ts"].get<int64_t>() + t.offset_us - origin;
        KindTotal& k = kinds[e.value("name", std::string("?"))];
        ++k.count;
        k.total_us += e["dur"].get<double>();
        ++spans;
      }
      merged.push_back(std::move(e));
    }
    max_uncertainty = std::max(max_uncertainty, t.uncertainty_us);
    const json& other = t.doc["otherData"];
    rank_info.push_back({{"file", t.file},
                         {"pid", pids[i]},
                         {"rank", t.rank},
                         {"member", other.value("member", std::string())},
                         {"host", other.value("host", std::string())},
                         {"clock_offset_us", t.offset_us},
                         {"clock_uncertainty_us", t.uncertainty_us},
                         {"range_complete", other.value("range_complete", false)},
                         {"dropped_events", other.value("dropped_events", 0)}});
  }
  json doc = {{"traceEvents", std::move(merged)},
              {"displayTimeUnit", "ms"},
              {"otherData",
               {{"job", o.job_id},
                {"clock", "the coordinator's (each rank shifted by its heartbeat-estimated offset)"},
                {"time_origin_unix_us", origin},
                {"max_clock_uncertainty_us", max_uncertainty},
                {"ranks", rank_info}}}};
  if (Status s = WriteFileAtomic(o.output, doc.dump() + "\n"); !s.ok()) return ReportError(s);

  json kinds_json = json::object();
  for (const auto& [name, k] : kinds) kinds_json[name] = {{"count", k.count}, {"total_ms", k.total_us / 1000.0}};
  const double span_ms = (end - origin) / 1000.0;
  if (o.json) {
    json summary = {{"job", o.job_id},          {"output", o.output},      {"ranks", rank_info},
                    {"events", spans},          {"span_ms", span_ms},      {"max_clock_uncertainty_us", max_uncertainty},
                    {"kinds", kinds_json},      {"source_dir", source->dir}};
    std::cout << summary.dump(2) << std::endl;
    return kExitOk;
  }
  std::printf("wrote %s: %zu rank(s), %lld spans over %.1f ms (clocks aligned to the coordinator's within %.3f ms)\n",
              o.output.c_str(), ranks.size(), static_cast<long long>(spans), span_ms, max_uncertainty / 1000.0);
  for (size_t i = 0; i < ranks.size(); ++i)
    std::printf("  rank %d  %s  offset %+.3f ms%s\n", ranks[i].rank, rank_info[i]["member"].get<std::string>().c_str(),
                ranks[i].offset_us / 1000.0, rank_info[i]["range_complete"].get<bool>() ? "" : "  (range cut short)");
  std::printf("  %-28s %8s %12s\n", "SPAN", "COUNT", "TOTAL ms");
  for (const auto& [name, k] : kinds)
    std::printf("  %-28s %8lld %12.3f\n", name.c_str(), static_cast<long long>(k.count), k.total_us / 1000.0);
  std::printf("open it in https://ui.perfetto.dev or chrome://tracing\n");
  return kExitOk;
}

}  // namespace

void RegisterTraceCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<TraceCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "trace", "Merge a job's timeline trace (the spec's trace range) into one Chrome / Perfetto JSON file");
  cmd->add_option("job", o->job_id, "job id")->required();
  cmd->add_option("-o,--output", o->output, "merged trace file to write")->required();
  cmd->add_option("--dir", o->dir,
                  "trace folder (trace.dir, or the job's folder in it) instead of the one the job's spec names");
  cmd->add_option("--coordinator", o->coordinator, "coordinator endpoint (default: $SHOAL_COORDINATOR, .shoal/endpoint)");
  cmd->add_option("--timeout", o->timeout_s, "seconds to wait for the coordinator")->capture_default_str();
  cmd->add_flag("--json", o->json, "print the summary as JSON on stdout");
  cmd->callback([o, exit_code] { *exit_code = DoTrace(*o); });
}

}  // namespace shoal

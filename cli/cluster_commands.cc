// `shoalctl submit | status | cancel`: talk to a running shoal-coordinator.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/format.h"
#include "common/file_util.h"
#include "coordinator/client.h"
#include "lineage/dataset_lineage.h"
#include "coordinator/coordinator.h"
#include "spec/jobspec_loader.h"

namespace shoal {

int ReportError(const Status& status) {
  std::fprintf(stderr, "shoalctl: %s\n", status.ToString().c_str());
  switch (status.code()) {
    case StatusCode::kOk: return kExitOk;
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kPermissionDenied: return kExitBadInput;
    case StatusCode::kUnavailable: return kExitUnreachable;
    case StatusCode::kCancelled: return kExitInterrupted;
    default: return kExitFailed;
  }
}

std::string DefaultCoordinator() {
  if (const char* env = std::getenv("SHOAL_COORDINATOR"); env && *env) return env;
  auto local = ReadFile(".shoal/endpoint");
  if (local.ok() && !local->empty()) return local->substr(0, local->find('\n'));
  return "tcp://127.0.0.1:7400";
}

std::string StoppedRunStateDir(const std::string& coordinator, const std::string& state_dir) {
  if (!state_dir.empty()) return state_dir;
  const char* env = std::getenv("SHOAL_COORDINATOR");
  if (!coordinator.empty() || (env && *env) || PathExists(".shoal/endpoint")) return "";
  return PathExists(".shoal/coordinator") ? ".shoal/coordinator" : "";
}

StatusOr<std::string> CheckpointDirOfJob(const std::string& job, const std::string& coordinator) {
  ControlClient client(coordinator.empty() ? DefaultCoordinator() : coordinator);
  Request r;
  r.mutable_checkpoint_list()->set_job_id(job);
  ASSIGN_OR_RETURN(Response resp, client.Call(r, std::chrono::seconds(5)));
  const CheckpointRecord* latest = nullptr;
  for (const CheckpointRecord& rec : resp.checkpoint_list().records()) {
    if (latest == nullptr || rec.step() > latest->step()) latest = &rec;
  }
  if (latest == nullptr) return NotFound("the coordinator's registry has no checkpoint of job " + job);
  // Records name step directories; their parent is the job directory.
  return std::filesystem::path(latest->path()).parent_path().string();
}

namespace {

struct ClusterOptions {
  std::string coordinator;
  std::string spec_path, job_id;
  std::vector<std::string> overrides;
  bool json = false, watch = false;
  double timeout_s = 5;
};

std::string Endpoint(const ClusterOptions& o) { return o.coordinator.empty() ? DefaultCoordinator() : o.coordinator; }

int DoSubmit(const ClusterOptions& o) {
  auto spec = LoadJobSpecFile(o.spec_path, o.overrides);
  if (!spec.ok()) return ReportError(spec.status());
  ControlClient client(Endpoint(o));
  Request r;
  *r.mutable_submit()->mutable_spec() = *spec;
  *r.mutable_submit()->mutable_lineage() = SubmitterLineage(*spec);
  r.mutable_submit()->set_job_id(o.job_id);
  auto resp = client.Call(r, std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
  if (!resp.ok()) return ReportError(resp.status());
  if (o.json)
    std::cout << nlohmann::json{{"job", resp->submit().job_id()}, {"coordinator", Endpoint(o)}}.dump() << std::endl;
  else
    std::cout << resp->submit().job_id() << std::endl;
  return kExitOk;
}

int DoStatus(const ClusterOptions& o) {
  ControlClient client(Endpoint(o));
  for (;;) {
    Request r;
    r.mutable_status()->set_job_id(o.job_id);
    auto resp = client.Call(r, std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
    if (!resp.ok()) return ReportError(resp.status());
    const StatusResponse& st = resp->status();
    if (!o.job_id.empty() && st.jobs_size() == 0) return ReportError(NotFound("unknown job " + o.job_id));
    if (o.json) {
      nlohmann::json jobs = nlohmann::json::array();
      for (const Job& job : st.jobs()) jobs.push_back(JobToJson(job, &st, st.now_ms()));
      std::cout << (o.job_id.empty() ? nlohmann::json{{"jobs", jobs}} : jobs[0]).dump(2) << std::endl;
    } else {
      if (o.watch && ::isatty(STDOUT_FILENO)) std::cout << "\033[H\033[2J";
      std::cout << StatusTable(st) << std::flush;
    }
    if (!o.watch) return kExitOk;
    bool all_done = st.jobs_size() > 0;
    for (const Job& job : st.jobs()) all_done = all_done && IsTerminal(job.state());
    if (all_done && !o.job_id.empty()) return kExitOk;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

int DoCancel(const ClusterOptions& o) {
  ControlClient client(Endpoint(o));
  Request r;
  r.mutable_cancel()->set_job_id(o.job_id);
  auto resp = client.Call(r, std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
  if (!resp.ok()) return ReportError(resp.status());
  std::string state = JobStateName(resp->cancel().state());
  if (o.json)
    std::cout << nlohmann::json{{"job", o.job_id}, {"state", state}}.dump() << std::endl;
  else
    std::cout << "job " << o.job_id << " " << state << std::endl;
  return kExitOk;
}

void AddCommon(CLI::App* cmd, ClusterOptions& o) {
  cmd->add_option("--coordinator", o.coordinator,
                  "coordinator endpoint tcp://HOST:PORT (default: $SHOAL_COORDINATOR, .shoal/endpoint, tcp://127.0.0.1:7400)");
  cmd->add_option("--timeout", o.timeout_s, "seconds to wait for the coordinator")->capture_default_str();
  cmd->add_flag("--json", o.json, "machine-readable output");
}

}  // namespace

void RegisterClusterCommands(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<ClusterOptions>();
  CLI::App* submit = app.add_subcommand("submit", "Submit a job spec to a running coordinator; prints the job id");
  submit->add_option("spec", o->spec_path, "job spec YAML file")->required();
  submit->add_option("--set", o->overrides, "override a spec field: path.to.field=value (repeatable)");
  submit->add_option("--job-id", o->job_id, "choose the job id (default: <name>-<random>)");
  AddCommon(submit, *o);
  submit->callback([o, exit_code] { *exit_code = DoSubmit(*o); });

  CLI::App* status = app.add_subcommand("status", "Show jobs and their workers");
  status->add_option("job", o->job_id, "job id (default: all jobs)");
  status->add_flag("--watch", o->watch, "refresh every second until the job ends");
  AddCommon(status, *o);
  status->callback([o, exit_code] { *exit_code = DoStatus(*o); });

  CLI::App* cancel = app.add_subcommand("cancel", "Cancel a job; its workers stop at the next step");
  cancel->add_option("job", o->job_id, "job id")->required();
  AddCommon(cancel, *o);
  cancel->callback([o, exit_code] { *exit_code = DoCancel(*o); });
}

}  // namespace shoal

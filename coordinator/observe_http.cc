// Routes of the coordinator's HTTP endpoint (observe_http.h) and the JSON the dashboard
// draws.
#include "coordinator/observe_http.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "coordinator/metrics_text.h"

namespace shoal {

namespace {

// The dashboard loads nothing from elsewhere and runs only its own inline script; the
// policy makes the browser hold it to that.
constexpr char kPagePolicy[] =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
// The dashboard lists this many of the job's latest events.
constexpr size_t kDashboardEvents = 60;

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

HttpResponse Json(const nlohmann::json& j) {
  HttpResponse r;
  r.content_type = "application/json";
  // Job names, hosts and causes are user text: replace invalid UTF-8 rather than throw.
  r.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

HttpResponse Page(const std::string& html) {
  HttpResponse r;
  r.content_type = "text/html; charset=utf-8";
  r.body = html;
  r.headers["Content-Security-Policy"] = kPagePolicy;
  return r;
}

bool IsCurrent(const Member& m, const Job& job) {
  return (m.state() == MEMBER_ACTIVE || m.state() == MEMBER_LEAVING || m.state() == MEMBER_FINISHED) &&
         m.generation() == job.generation();
}

nlohmann::json JobSummary(const Job& job, const StatusResponse& status) {
  int64_t step = job.committed_step();
  double loss = 0, sps = 0, acc = -1;
  int stragglers = 0;
  for (const Member& m : status.members()) {
    if (m.job_id() != job.id() || !IsCurrent(m, job)) continue;
    stragglers += m.straggler() ? 1 : 0;
    if (m.rank() != 0) continue;
    step = std::max(step, m.metrics().step());
    loss = m.metrics().loss();
    sps = m.metrics().samples_per_second();
    acc = m.metrics().test_accuracy();
  }
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [k, v] : job.spec().labels()) labels[k] = v;
  nlohmann::json j = {{"id", job.id()},
                      {"name", job.spec().name()},
                      {"state", JobStateName(job.state())},
                      {"generation", job.generation()},
                      {"world_size", job.world_size()},
                      {"target_size", job.target_size()},
                      {"total_steps", job.total_steps()},
                      {"step", step},
                      {"loss", loss},
                      {"test_accuracy", acc},
                      {"samples_per_second", sps},
                      {"stragglers", stragglers},
                      {"restarts", job.restarts()},
                      {"created_ms", job.created_ms()},
                      {"updated_ms", job.updated_ms()},
                      {"labels", labels}};
  if (!job.failure_reason().empty()) j["failure_reason"] = job.failure_reason();
  if (job.regroup() != REGROUP_NONE) j["regroup_cause"] = job.regroup_cause();
  if (job.state() == JOB_COMPLETED) j["final_test_accuracy"] = job.result().final_test_accuracy();
  return j;
}

std::string IndexHtml(const StatusResponse& status) {
  std::string rows;
  for (const Job& job : status.jobs()) {
    const nlohmann::json s = JobSummary(job, status);
    char figures[160];
    std::snprintf(figures, sizeof(figures), "<td>%lld / %lld</td><td>%.4f</td><td>%.0f</td><td>%lld</td><td>%d</td>",
                  static_cast<long long>(s["step"].get<int64_t>()), static_cast<long long>(job.total_steps()),
                  s["loss"].get<double>(), s["samples_per_second"].get<double>(),
                  static_cast<long long>(job.generation()), job.world_size());
    const std::string id = HtmlEscape(job.id());
    rows += "<tr><td><a href=\"/job/" + id + "\">" + id + "</a></td><td>" + HtmlEscape(job.spec().name()) +
            "</td><td class=\"" + JobStateName(job.state()) + "\">" + JobStateName(job.state()) + "</td>" + figures +
            "<td>" + (s["stragglers"].get<int>() > 0 ? "<b class=\"slow\">" + std::to_string(s["stragglers"].get<int>()) + " slow</b>" : "") +
            "</td></tr>\n";
  }
  if (rows.empty()) rows = "<tr><td colspan=\"9\">no jobs yet</td></tr>\n";
  return R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>Shoal jobs</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#1d232a;background:#f6f7f9}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 3px #0002}
th,td{padding:6px 12px;border-bottom:1px solid #e3e6ea;text-align:left}
th{background:#eef1f4}.running{color:#1565c0}.completed{color:#2e7d32}.failed,.cancelled{color:#c62828}
.slow{color:#e65100}a{color:#1565c0}
</style></head><body>
<h1>Shoal jobs</h1>
<table><thead><tr><th>job</th><th>name</th><th>state</th><th>step</th><th>loss</th><th>samples/s</th>
<th>generation</th><th>world</th><th>stragglers</th></tr></thead><tbody>
)" + rows + R"(</tbody></table>
<p><a href="/metrics">Prometheus metrics</a> &middot; read-only, unauthenticated: keep on loopback or behind a proxy</p>
</body></html>
)";
}

}  // namespace

nlohmann::json JobDashboardJson(const StatusResponse& status, const JobHistory* history, const std::vector<Event>& events) {
  const Job& job = status.jobs(0);
  nlohmann::json j = {{"job", JobSummary(job, status)}, {"now_ms", status.now_ms()}};
  nlohmann::json progress = {{"step", nlohmann::json::array()},         {"unix_ms", nlohmann::json::array()},
                             {"loss", nlohmann::json::array()},         {"test_accuracy", nlohmann::json::array()},
                             {"samples_per_second", nlohmann::json::array()}, {"generation", nlohmann::json::array()},
                             {"evaluations", nlohmann::json::array()}};
  nlohmann::json work = nlohmann::json::array(), generations = nlohmann::json::array(),
                 stragglers = nlohmann::json::array();
  std::map<std::string, const Member*> members;
  for (const Member& m : status.members())
    if (m.job_id() == job.id()) members[m.id()] = &m;
  if (history) {
    for (const ProgressPoint& p : history->progress()) {
      progress["step"].push_back(p.step);
      progress["unix_ms"].push_back(p.unix_ms);
      progress["loss"].push_back(p.loss);
      progress["test_accuracy"].push_back(p.test_accuracy);
      progress["samples_per_second"].push_back(p.samples_per_second);
      progress["generation"].push_back(p.generation);
      progress["evaluations"].push_back(p.evaluations);
    }
    for (const auto& [member, points] : history->work()) {
      nlohmann::json w = {{"member", member}, {"step", nlohmann::json::array()},
                          {"compute_ms", nlohmann::json::array()}, {"loader_wait_ms", nlohmann::json::array()}};
      auto m = members.find(member);
      w["rank"] = m != members.end() && IsCurrent(*m->second, job) ? m->second->rank() : -1;
      w["straggler"] = m != members.end() && m->second->straggler();
      for (const WorkPoint& p : points) {
        w["step"].push_back(p.step);
        w["compute_ms"].push_back(p.compute_seconds * 1000);
        w["loader_wait_ms"].push_back(p.loader_wait_seconds * 1000);
      }
      work.push_back(w);
    }
    for (const GenerationMark& g : history->generations())
      generations.push_back({{"generation", g.generation}, {"step", g.step}, {"unix_ms", g.unix_ms},
                             {"world", g.world}, {"cause", g.cause}});
    for (const StragglerMark& s : history->stragglers())
      stragglers.push_back({{"member", s.member}, {"rank", s.rank}, {"step", s.step}, {"unix_ms", s.unix_ms},
                            {"ratio", s.ratio}, {"flagged", s.flagged}});
  }
  // The last evaluation reaches the coordinator with the job's result, not a heartbeat:
  // the finished job's curves end with it.
  const JobResult& result = job.result();
  const auto& steps = progress["step"];
  if (job.state() == JOB_COMPLETED && result.steps() > 0 &&
      (steps.empty() || steps.back().get<int64_t>() < result.steps() ||
       progress["test_accuracy"].back().get<double>() != result.final_test_accuracy() ||
       progress["evaluations"].back().get<int32_t>() < result.epoch_test_accuracy_size())) {
    progress["step"].push_back(result.steps());
    progress["unix_ms"].push_back(job.updated_ms());
    progress["loss"].push_back(result.final_loss());
    progress["test_accuracy"].push_back(result.final_test_accuracy());
    progress["samples_per_second"].push_back(result.samples_per_second());
    progress["generation"].push_back(job.generation());
    progress["evaluations"].push_back(result.epoch_test_accuracy_size());
  }
  if (generations.empty()) {
    // A coordinator restarted since the job ran has no history: its events still say
    // when generations formed (at an unknown step: the page lists them, draws no line).
    for (const Event& e : events)
      if (e.kind() == "generation" && e.figures().count("generation"))
        generations.push_back({{"generation", static_cast<int64_t>(e.figures().at("generation"))},
                               {"step", -1},
                               {"unix_ms", e.unix_ms()},
                               {"world", static_cast<int>(e.figures().count("world") ? e.figures().at("world") : 0)},
                               {"cause", e.detail()}});
  }
  nlohmann::json member_rows = nlohmann::json::array();
  for (const auto& [id, m] : members) {
    const WorkerMetrics& w = m->metrics();
    member_rows.push_back({{"member", id},
                           {"rank", IsCurrent(*m, job) ? m->rank() : -1},
                           {"state", MemberStateName(m->state())},
                           {"host", m->host()},
                           {"pid", m->pid()},
                           {"step", w.step()},
                           {"compute_ms", w.compute_seconds() * 1000},
                           {"loader_wait_ms", w.loader_wait_seconds() * 1000},
                           {"comm_ms", w.comm_seconds() * 1000},
                           {"step_ms", w.step_seconds() * 1000},
                           {"heartbeat_age_s", (status.now_ms() - m->last_heartbeat_ms()) / 1000.0},
                           {"straggler", m->straggler()},
                           {"straggler_ratio", m->straggler_ratio()},
                           {"reason", m->failure_reason()}});
  }
  nlohmann::json event_rows = nlohmann::json::array();
  const size_t first = events.size() > kDashboardEvents ? events.size() - kDashboardEvents : 0;
  for (size_t i = first; i < events.size(); ++i)
    event_rows.push_back({{"seq", events[i].seq()}, {"unix_ms", events[i].unix_ms()}, {"kind", events[i].kind()},
                          {"detail", events[i].detail()}});
  j["progress"] = progress;
  j["work"] = work;
  j["generations"] = generations;
  j["stragglers"] = stragglers;
  j["members"] = member_rows;
  j["events"] = event_rows;
  return j;
}

HttpResponse ServeObservability(const HttpRequest& req, const Coordinator& coordinator, int64_t now_ms) {
  const std::string& path = req.path;
  if (path == "/metrics") {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = PrometheusText(coordinator.Snapshot("", now_ms));
    return r;
  }
  if (path == "/" || path == "/index.html") return Page(IndexHtml(coordinator.Snapshot("", now_ms)));
  if (path == "/api/jobs") {
    const StatusResponse all = coordinator.Snapshot("", now_ms);
    nlohmann::json jobs = nlohmann::json::array();
    for (const Job& job : all.jobs()) jobs.push_back(JobSummary(job, all));
    return Json({{"jobs", jobs}, {"now_ms", now_ms}});
  }
  for (const std::string prefix : {"/job/", "/api/job/"}) {
    if (path.rfind(prefix, 0) != 0) continue;
    const std::string id = path.substr(prefix.size());
    if (id.empty() || coordinator.FindJob(id) == nullptr) return TextResponse(404, "no job '" + id + "'");
    if (prefix == "/job/") return Page(JobDashboardHtml(id));
    const StatusResponse status = coordinator.Snapshot(id, now_ms);
    return Json(JobDashboardJson(status, coordinator.HistoryOf(id), coordinator.EventsOf(id)));
  }
  return TextResponse(404, "not found: try /, /job/<id>, /api/job/<id>, /api/jobs or /metrics");
}

}  // namespace shoal

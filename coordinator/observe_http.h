// The coordinator's read-only HTTP endpoint: what each path serves.
//
//   GET /metrics        Prometheus text format 0.0.4 (metrics_text.h)
//   GET /               the jobs, with links to their dashboards
//   GET /job/<id>       one job's dashboard: a self-contained page (inline CSS and JS, no
//                       external resources) drawing what /api/job/<id> returns
//   GET /api/job/<id>   the job, its members, its history (job_history.h) and events, JSON
//   GET /api/jobs       every job, JSON
//
// Runs on the coordinator's loop thread (server.cc), so it reads the Coordinator
// directly. Unauthenticated: whoever reaches the port reads job names, hosts, labels
// and metrics; it changes nothing.
#pragma once

#include <nlohmann/json.hpp>

#include "coordinator/coordinator.h"
#include "coordinator/http_server.h"

namespace shoal {

HttpResponse ServeObservability(const HttpRequest& request, const Coordinator& coordinator, int64_t now_ms);

// The JSON behind a job's dashboard (exposed for tests).
nlohmann::json JobDashboardJson(const StatusResponse& status, const JobHistory* history, const std::vector<Event>& events);

// The dashboard page of one job (dashboard_page.cc); it fetches api/job/<id> itself.
std::string JobDashboardHtml(const std::string& job_id);

}  // namespace shoal

// The Prometheus text rendering of jobs and workers (metrics_text.h).
#include "coordinator/metrics_text.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>
#include <vector>

#include "coordinator/coordinator.h"

namespace shoal {

namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // The shortest text that reads back as the same double (123456789012, not 1.23e+11).
  char buf[40];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

// Collects samples per family, so that each family is written once with its HELP and
// TYPE lines and all its samples together, in the order families were declared.
class Exposition {
 public:
  void Family(const std::string& name, const std::string& type, const std::string& help) {
    if (families_.count(name)) return;
    order_.push_back(name);
    families_[name] = "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void Sample(const std::string& name, const Labels& labels, double value) {
    std::string& out = families_.at(name);
    out += name;
    if (!labels.empty()) {
      out += "{";
      for (size_t i = 0; i < labels.size(); ++i)
        out += (i ? "," : "") + labels[i].first + "=\"" + EscapeLabelValue(labels[i].second) + "\"";
      out += "}";
    }
    out += " " + Number(value) + "\n";
    ++samples_[name];
  }
  std::string Text() const {
    std::string out;
    for (const std::string& name : order_)
      if (samples_.count(name)) out += families_.at(name);  // a family without samples is left out
    return out;
  }

 private:
  std::vector<std::string> order_;
  std::map<std::string, std::string> families_;
  std::map<std::string, int> samples_;
};

// The job's own labels plus the cost-attribution ones its spec sets.
Labels JobLabels(const Job& job) {
  Labels l = {{"job", job.id()}};
  for (const char* key : {"team", "project"}) {
    auto it = job.spec().labels().find(key);
    if (it != job.spec().labels().end() && !it->second.empty()) l.emplace_back(key, it->second);
  }
  return l;
}

void DeclareFamilies(Exposition& e) {
  e.Family("shoal_jobs", "gauge", "Jobs the coordinator knows, by state.");
  e.Family("shoal_job_state", "gauge", "1 for the job's current state, 0 for the others.");
  e.Family("shoal_job_generation", "gauge", "The job's current membership generation.");
  e.Family("shoal_job_world_size", "gauge", "Workers in the job's current generation.");
  e.Family("shoal_job_target_size", "gauge", "The size shoalctl scale asked for (0: as many as come, up to workers.max).");
  e.Family("shoal_job_committed_step", "gauge", "The highest committed training step.");
  e.Family("shoal_job_total_steps", "gauge", "Steps the job will train in all.");
  e.Family("shoal_job_loss", "gauge", "Training loss, rank 0's mean over its last reporting window.");
  e.Family("shoal_job_test_accuracy", "gauge", "Rank 0's last test accuracy (absent before the first evaluation).");
  e.Family("shoal_job_samples_per_second", "gauge", "Global training throughput, as rank 0 measures it.");
  e.Family("shoal_job_restarts_total", "counter", "Whole-job restarts (a backend that cannot regroup).");
  e.Family("shoal_job_stragglers", "gauge", "Workers flagged as stragglers now.");
  e.Family("shoal_worker_step", "gauge", "The worker's committed step.");
  e.Family("shoal_worker_loss", "gauge", "The worker's training loss (its own samples, last window).");
  e.Family("shoal_worker_samples_per_second", "gauge", "Global samples per second as this worker measures it.");
  e.Family("shoal_worker_step_seconds", "gauge", "Mean wall time per step (equal on every rank: all wait for the allreduce).");
  e.Family("shoal_worker_compute_seconds", "gauge", "Mean forward+backward time per step: the worker's own work.");
  e.Family("shoal_worker_communication_seconds", "gauge", "Mean gradient communication time per step.");
  e.Family("shoal_worker_loader_wait_seconds", "gauge", "Mean time per step waiting for the data loader.");
  e.Family("shoal_worker_sent_bytes_total", "counter", "Bytes sent at the transport boundary.");
  e.Family("shoal_worker_checkpoint_stall_seconds_total", "counter", "Time training waited on checkpoints.");
  e.Family("shoal_worker_cpu_seconds_total", "counter", "User+system CPU time of the worker process.");
  e.Family("shoal_worker_cpu_energy_joules_total", "counter", "The worker's share of CPU package energy (RAPL, where readable).");
  e.Family("shoal_worker_resident_memory_bytes", "gauge", "Resident memory of the worker process.");
  e.Family("shoal_worker_gpu_utilization_ratio", "gauge", "GPU busy fraction (0-1).");
  e.Family("shoal_worker_gpu_memory_used_bytes", "gauge", "GPU memory in use.");
  e.Family("shoal_worker_gpu_memory_total_bytes", "gauge", "GPU memory in all.");
  e.Family("shoal_worker_gpu_power_watts", "gauge", "GPU power draw.");
  e.Family("shoal_worker_gpu_temperature_celsius", "gauge", "GPU temperature.");
  e.Family("shoal_worker_gpu_energy_joules_total", "counter", "GPU energy this worker used in this job.");
  e.Family("shoal_worker_heartbeat_age_seconds", "gauge", "Seconds since the worker's last heartbeat.");
  e.Family("shoal_worker_straggler", "gauge", "1 when the worker is flagged as a straggler.");
  e.Family("shoal_worker_straggler_ratio", "gauge",
           "The worker's compute+loader time per step over its peers' median (last 10 s; 0: not judged yet).");
}

void WorkerSamples(Exposition& e, const Job& job, const Member& m, int64_t now_ms) {
  Labels l = {{"job", job.id()}, {"member", m.id()}, {"rank", std::to_string(m.rank())}, {"host", m.host()}};
  for (const auto& extra : JobLabels(job))
    if (extra.first != "job") l.push_back(extra);
  const WorkerMetrics& w = m.metrics();
  e.Sample("shoal_worker_step", l, static_cast<double>(w.step()));
  e.Sample("shoal_worker_loss", l, w.loss());
  e.Sample("shoal_worker_samples_per_second", l, w.samples_per_second());
  e.Sample("shoal_worker_step_seconds", l, w.step_seconds());
  e.Sample("shoal_worker_compute_seconds", l, w.compute_seconds());
  e.Sample("shoal_worker_communication_seconds", l, w.comm_seconds());
  e.Sample("shoal_worker_loader_wait_seconds", l, w.loader_wait_seconds());
  e.Sample("shoal_worker_sent_bytes_total", l, static_cast<double>(w.bytes_sent()));
  e.Sample("shoal_worker_checkpoint_stall_seconds_total", l, w.checkpoint_stall_seconds());
  e.Sample("shoal_worker_cpu_seconds_total", l, w.cpu_seconds());
  if (w.cpu_energy_known()) e.Sample("shoal_worker_cpu_energy_joules_total", l, w.cpu_energy_joules());
  e.Sample("shoal_worker_resident_memory_bytes", l, static_cast<double>(w.rss_bytes()));
  if (w.has_gpu()) {
    Labels g = l;
    g.emplace_back("gpu", std::to_string(w.gpu_device()));
    e.Sample("shoal_worker_gpu_utilization_ratio", g, w.gpu_utilization_pct() / 100.0);
    e.Sample("shoal_worker_gpu_memory_used_bytes", g, static_cast<double>(w.gpu_memory_used_bytes()));
    e.Sample("shoal_worker_gpu_memory_total_bytes", g, static_cast<double>(w.gpu_memory_total_bytes()));
    e.Sample("shoal_worker_gpu_power_watts", g, w.gpu_power_watts());
    e.Sample("shoal_worker_gpu_temperature_celsius", g, w.gpu_temperature_c());
    e.Sample("shoal_worker_gpu_energy_joules_total", g, w.gpu_energy_joules());
  }
  e.Sample("shoal_worker_heartbeat_age_seconds", l, std::max<int64_t>(0, now_ms - m.last_heartbeat_ms()) / 1000.0);
  e.Sample("shoal_worker_straggler", l, m.straggler() ? 1 : 0);
  e.Sample("shoal_worker_straggler_ratio", l, m.straggler_ratio());
}

}  // namespace

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string PrometheusText(const StatusResponse& status) {
  Exposition e;
  DeclareFamilies(e);
  const int64_t now_ms = status.now_ms();
  std::map<JobState, int> by_state;
  for (JobState s : {JOB_PENDING, JOB_RUNNING, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED}) by_state[s] = 0;
  for (const Job& job : status.jobs()) ++by_state[job.state()];
  for (const auto& [state, count] : by_state) e.Sample("shoal_jobs", {{"state", JobStateName(state)}}, count);

  for (const Job& job : status.jobs()) {
    if (IsTerminal(job.state()) && now_ms - job.updated_ms() > kEndedJobMetricsMs) continue;
    const Labels l = JobLabels(job);
    for (JobState s : {JOB_PENDING, JOB_RUNNING, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED}) {
      Labels ls = l;
      ls.emplace_back("state", JobStateName(s));
      e.Sample("shoal_job_state", ls, job.state() == s ? 1 : 0);
    }
    e.Sample("shoal_job_generation", l, static_cast<double>(job.generation()));
    e.Sample("shoal_job_world_size", l, job.world_size());
    e.Sample("shoal_job_target_size", l, job.target_size());
    e.Sample("shoal_job_total_steps", l, static_cast<double>(job.total_steps()));
    e.Sample("shoal_job_restarts_total", l, job.restarts());
    const Member* rank0 = nullptr;
    int stragglers = 0;
    int64_t step = job.committed_step();
    for (const Member& m : status.members()) {
      if (m.job_id() != job.id()) continue;
      const bool current = (m.state() == MEMBER_ACTIVE || m.state() == MEMBER_LEAVING) &&
                           m.generation() == job.generation() && !IsTerminal(job.state());
      if (m.rank() == 0 && m.generation() == job.generation() &&
          (current || m.state() == MEMBER_FINISHED))
        rank0 = &m;
      if (!current) continue;
      stragglers += m.straggler() ? 1 : 0;
      WorkerSamples(e, job, m, now_ms);
    }
    if (rank0) {
      step = std::max(step, rank0->metrics().step());
      e.Sample("shoal_job_loss", l, rank0->metrics().loss());
      e.Sample("shoal_job_samples_per_second", l, rank0->metrics().samples_per_second());
      if (rank0->metrics().test_accuracy() >= 0) e.Sample("shoal_job_test_accuracy", l, rank0->metrics().test_accuracy());
    }
    e.Sample("shoal_job_committed_step", l, static_cast<double>(step));
    e.Sample("shoal_job_stragglers", l, stragglers);
  }
  return e.Text();
}

}  // namespace shoal

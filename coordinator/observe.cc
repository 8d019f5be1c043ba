// What the coordinator records for people to look at: each job's in-memory history (the
// dashboard's curves and marks) and the straggler flags, fed by heartbeats and judged
// on the server's tick. Read by the HTTP endpoint (observe_http.h) on the same thread.
#include <cstdio>

#include "common/log.h"
#include "coordinator/coordinator.h"

namespace shoal {

namespace {
// Stragglers are judged once a second: a heartbeat only moves its member's window, and
// judging every job on every heartbeat would cost O(members) per heartbeat.
constexpr int64_t kStragglerCheckMs = 1000;

bool InCurrentGeneration(const Member& m, const Job& job) {
  return (m.state() == MEMBER_ACTIVE || m.state() == MEMBER_LEAVING) && m.generation() == job.generation();
}

std::string Millis(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f ms", seconds * 1000);
  return buf;
}
}  // namespace

StatusResponse Coordinator::Snapshot(const std::string& job_id, int64_t now_ms) const {
  StatusResponse out;
  StatusRequest req;
  req.set_job_id(job_id);
  FillStatus(req, now_ms, &out);
  return out;
}

const JobHistory* Coordinator::HistoryOf(const std::string& job_id) const {
  auto it = histories_.find(job_id);
  return it == histories_.end() ? nullptr : &it->second;
}

void Coordinator::ObserveHeartbeat(const Job& job, const MemberRecord& rec, int64_t now_ms) {
  if (job.state() != JOB_RUNNING) return;
  const Member& m = rec.member;
  const WorkerMetrics& w = m.metrics();
  JobHistory& history = histories_[job.id()];
  if (m.rank() == 0) history.AddProgress(job.generation(), job.world_size(), w, now_ms);
  history.AddWork(m.id(), w);
  straggler_windows_.Observe(m.id(), now_ms, w.compute_seconds() + w.loader_wait_seconds());
}

void Coordinator::MarkGenerationFormed(const Job& job, int64_t start_step, const std::string& cause, int64_t now_ms) {
  GenerationMark mark;
  mark.generation = job.generation();
  mark.step = start_step;
  mark.unix_ms = now_ms;
  mark.world = job.world_size();
  mark.cause = cause;
  histories_[job.id()].MarkGeneration(mark);
}

void Coordinator::CheckStragglers(int64_t now_ms) {
  if (now_ms < next_straggler_check_ms_) return;
  next_straggler_check_ms_ = now_ms + kStragglerCheckMs;
  for (auto& [id, rec] : members_) {
    // A member out of its job's current generation is judged no more: it is not slow,
    // it is gone (or waiting to join), and its window must not count as a peer's.
    const Job& job = jobs_.at(rec.member.job_id());
    if (job.state() == JOB_RUNNING && InCurrentGeneration(rec.member, job)) continue;
    straggler_windows_.Forget(id);
    rec.member.set_straggler(false);
    rec.member.set_straggler_ratio(0);
  }
  for (auto& [job_id, job] : jobs_) {
    // Mid-regroup the members are not training: keep the flags as they are.
    if (job.state() != JOB_RUNNING || job.regroup() != REGROUP_NONE) continue;
    std::vector<MemberRecord*> judged;
    std::vector<double> medians;
    std::vector<bool> flagged;
    for (MemberRecord* rec : CurrentMembers(job)) {
      auto median = straggler_windows_.WindowMedian(rec->member.id(), now_ms);
      if (!median) continue;
      judged.push_back(rec);
      medians.push_back(*median);
      flagged.push_back(rec->member.straggler());
    }
    const std::vector<StragglerVerdict> verdicts = JudgeStragglers(medians, flagged);
    const double group_median = Median(medians);
    for (size_t i = 0; i < judged.size(); ++i) {
      Member& m = judged[i]->member;
      const StragglerVerdict& v = verdicts[i];
      m.set_straggler_ratio(judged.size() >= 2 ? v.ratio : 0);  // alone, it has no peers to compare with
      if (v.straggler == m.straggler()) continue;
      m.set_straggler(v.straggler);
      char ratio[32];
      std::snprintf(ratio, sizeof(ratio), "%.2fx", v.ratio);
      const std::string who = m.id() + " (rank " + std::to_string(m.rank()) + ")";
      const std::string detail =
          v.straggler ? who + " works " + ratio + " its peers' median per step (compute + loader wait " +
                            Millis(medians[i]) + ", the group's median " + Millis(group_median) + ")"
                      : who + " is back in line: " + ratio + " its peers' median per step";
      AddEvent(job_id, v.straggler ? "straggler" : "straggler_cleared", detail, now_ms,
               {{"ratio", v.ratio},
                {"z", v.z},
                {"rank", static_cast<double>(m.rank())},
                {"work_s", medians[i]},
                {"group_median_work_s", group_median}});
      StragglerMark mark;
      mark.member = m.id();
      mark.rank = m.rank();
      mark.step = histories_[job_id].last_step();
      mark.unix_ms = now_ms;
      mark.ratio = v.ratio;
      mark.flagged = v.straggler;
      histories_[job_id].MarkStraggler(mark);
    }
  }
}

}  // namespace shoal

// Coordinator membership: registration, heartbeats, leaves and scaling, and the
// generations they end and form (the protocol's steps 2-7 in coordinator.h).
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "common/log.h"
#include "coordinator/coordinator.h"
#include "coordinator/membership.h"

namespace shoal {

namespace {
// Heartbeats persist a member's metrics at most this often (Heartbeat says why).
constexpr int64_t kHeartbeatPersistMs = 10000;

std::string KvScope(const std::string& job, int64_t generation) {
  return job + "/gen-" + std::to_string(generation) + "/";
}

int MemberIndex(const std::string& id) {
  const size_t at = id.rfind("/m");
  return at == std::string::npos ? 0 : std::atoi(id.c_str() + at + 2);
}

std::string Seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f s", s);
  return buf;
}

bool InGeneration(const Member& m) { return m.state() == MEMBER_ACTIVE || m.state() == MEMBER_LEAVING; }

}  // namespace

std::vector<Coordinator::MemberRecord*> Coordinator::MembersOf(const std::string& job_id, MemberState state) {
  std::vector<MemberRecord*> out;
  for (auto& [id, rec] : members_)
    if (rec.member.job_id() == job_id && rec.member.state() == state) out.push_back(&rec);
  std::stable_sort(out.begin(), out.end(),
                   [](auto* a, auto* b) { return MemberIndex(a->member.id()) < MemberIndex(b->member.id()); });
  return out;
}

std::vector<Coordinator::MemberRecord*> Coordinator::CurrentMembers(const Job& job) {
  std::vector<MemberRecord*> out;
  for (auto& [id, rec] : members_)
    if (rec.member.job_id() == job.id() && InGeneration(rec.member) && rec.member.generation() == job.generation())
      out.push_back(&rec);
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->member.rank() < b->member.rank(); });
  return out;
}

int Coordinator::Capacity(const Job& job) const {
  const int max = job.spec().workers().max();
  return job.target_size() > 0 ? std::min(job.target_size(), max) : max;
}

Status Coordinator::Register(const RegisterRequest& req, int64_t now_ms, RegisterResponse* out) {
  auto it = jobs_.find(req.job_id());
  if (it == jobs_.end()) return NotFound("unknown job '" + req.job_id() + "' (shoalctl status lists the jobs)");
  Job& job = it->second;
  if (IsTerminal(job.state()))
    return FailedPrecondition("job " + job.id() + " has already ended (" + JobStateName(job.state()) + ")");
  const bool restarting = job.fixed_membership() && job.regroup() != REGROUP_NONE;
  if (job.state() == JOB_RUNNING && !restarting && (job.fixed_membership() || !req.elastic()))
    return FailedPrecondition("job " + job.id() + " is running with a fixed membership of " +
                              std::to_string(job.world_size()) +
                              " (its backend cannot regroup: mpi); it takes no new workers");
  int index = next_member_index_[job.id()]++;
  Member m;
  m.set_id(job.id() + "/m" + std::to_string(index));
  m.set_job_id(job.id());
  m.set_host(req.host());
  m.set_pid(req.pid());
  m.set_code_version(req.code_version());
  m.set_state(MEMBER_REGISTERED);
  m.set_rank(-1);
  m.set_last_heartbeat_ms(now_ms);
  m.set_launcher_rank(req.launcher_rank());
  m.set_launcher_size(req.launcher_size());
  m.set_elastic(req.elastic());
  m.mutable_metrics()->set_test_accuracy(-1);
  RETURN_IF_ERROR(SaveMember(m));
  members_[m.id()].member = m;
  AddEvent(job.id(), "registered", m.id() + " from " + req.host() + " pid " + std::to_string(req.pid()), now_ms);
  out->set_member_id(m.id());
  out->set_heartbeat_interval_s(job.spec().workers().heartbeat_interval_s());
  if (job.state() == JOB_PENDING) {
    FormFirstGeneration(job, now_ms);
  } else if (restarting) {
    MaybeFormRestartedGeneration(job, now_ms);
  } else if (static_cast<int>(CurrentMembers(job).size()) < Capacity(job)) {
    EndGeneration(job, REGROUP_AT_BOUNDARY, m.id() + " joins", now_ms);
    MaybeFormNextGeneration(job, now_ms);  // a job waiting below workers.min forms at once
  } else {
    AddEvent(job.id(), "queued", m.id() + " waits: the job is at its size of " + std::to_string(Capacity(job)), now_ms);
  }
  return OkStatus();
}

void Coordinator::FormFirstGeneration(Job& job, int64_t now_ms) {
  auto waiting = MembersOf(job.id(), MEMBER_REGISTERED);
  // A job scaled before it started begins at its target size.
  const int initial = job.target_size() > 0 ? std::min(job.target_size(), job.spec().workers().initial())
                                            : job.spec().workers().initial();
  if (static_cast<int>(waiting.size()) < initial) return;
  // Launcher ranks (mpirun/srun) fix the order so the MPI rank equals the Shoal rank.
  bool launched = std::all_of(waiting.begin(), waiting.end(), [](auto* r) { return r->member.launcher_rank() >= 0; });
  if (launched)
    std::stable_sort(waiting.begin(), waiting.end(),
                     [](auto* a, auto* b) { return a->member.launcher_rank() < b->member.launcher_rank(); });
  waiting.resize(initial);
  job.set_fixed_membership(!std::all_of(waiting.begin(), waiting.end(), [](auto* r) { return r->member.elastic(); }));
  FormGeneration(job, waiting, "start", now_ms);
}

void Coordinator::FormGeneration(Job& job, const std::vector<MemberRecord*>& members, const std::string& cause,
                                 int64_t now_ms) {
  Generation gen;
  gen.set_job_id(job.id());
  gen.set_number(job.generation() + 1);
  gen.set_formed_ms(now_ms);
  gen.set_cause(cause);
  // The state source: the member that got furthest (a half-finished reduction can leave
  // some a step behind); the lowest rank among equals.
  int source = -1;
  int64_t best = -1;
  for (size_t r = 0; r < members.size(); ++r) {
    const Member& m = members[r]->member;
    if (m.has_state() && m.committed_step() > best) {
      best = m.committed_step();
      source = static_cast<int>(r);
    }
  }
  std::string state_note;
  int64_t start_step = 0;  // where the generation trains from
  if (source >= 0) {
    start_step = best;
    state_note = "state from rank " + std::to_string(source) + " at step " + std::to_string(best);
    (void)ledgers_.TruncateTo(job.id(), best);  // steps past the source's were never committed
  } else if (job.generation() > 0) {
    // Nobody holds state: the job rolls back to its latest checkpoint (or the start).
    auto ckpts = checkpoints_.Of(job.id());
    const int64_t back_to = ckpts.empty() ? 0 : ckpts.back().step();
    start_step = back_to;
    if (!ckpts.empty()) gen.set_resume_checkpoint(ckpts.back().path());
    (void)ledgers_.TruncateTo(job.id(), back_to);
    state_note = ckpts.empty() ? "no member holds state and there is no checkpoint: starting over from step 0"
                               : "no member holds state: resuming from checkpoint step " + std::to_string(back_to);
    AddEvent(job.id(), "rollback", state_note, now_ms);
  } else {
    state_note = "state from the spec";
  }
  gen.set_state_source(source);

  std::vector<std::pair<std::string, std::string>> batch;
  for (size_t r = 0; r < members.size(); ++r) {
    Member& m = members[r]->member;
    m.set_state(MEMBER_ACTIVE);
    m.set_rank(static_cast<int>(r));
    m.set_generation(gen.number());
    gen.add_member_ids(m.id());
    batch.emplace_back("member/" + m.job_id() + "/" + m.id(), m.SerializeAsString());
  }
  const int64_t old_generation = job.generation();
  job.set_state(JOB_RUNNING);
  job.set_generation(gen.number());
  job.set_world_size(static_cast<int>(members.size()));
  job.set_updated_ms(now_ms);
  job.set_regroup(REGROUP_NONE);
  job.set_regroup_cause("");
  job.set_below_min_since_ms(0);
  batch.emplace_back(GenKey(job.id(), gen.number()), gen.SerializeAsString());
  batch.emplace_back("job/" + job.id(), job.SerializeAsString());
  GenerationLineage lineage;
  lineage.set_job_id(job.id());
  lineage.set_number(gen.number());
  lineage.set_formed_ms(now_ms);
  lineage.set_cause(cause);
  lineage.set_state_source(source);
  lineage.set_resume_checkpoint(gen.resume_checkpoint());
  for (size_t r = 0; r < members.size(); ++r) {
    const Member& m = members[r]->member;
    LineageMember* lm = lineage.add_members();
    lm->set_id(m.id());
    lm->set_host(m.host());
    lm->set_pid(m.pid());
    lm->set_rank(static_cast<int>(r));
    lm->set_code_version(m.code_version());
  }
  std::string lineage_digest;
  batch.push_back(lineage_.GenerationEntry(lineage, &lineage_digest));
  lineage.set_digest(lineage_digest);
  Status s = store_->PutBatch(batch);  // one atomic write: ranks, generation, job state
  if (!s.ok()) SHOAL_LOG_ERROR("cannot persist generation: {}", s.ToString());
  if (old_generation > 0) kv_.DropPrefix(KvScope(job.id(), old_generation));
  first_report_ms_.erase(job.id());
  std::string ranks;
  for (size_t r = 0; r < members.size(); ++r) ranks += (r ? ", " : "") + members[r]->member.id();
  AddEvent(job.id(), "generation",
           std::to_string(gen.number()) + " formed with " + std::to_string(members.size()) + " member(s) [" + ranks +
               "] (" + cause + "); " + state_note,
           now_ms, {{"generation", static_cast<double>(gen.number())}, {"world", static_cast<double>(members.size())}});
  EmitLineageEvent(job.id(), old_generation == 0 ? "START" : "OTHER", now_ms, &lineage, {});
  MarkGenerationFormed(job, start_step, cause, now_ms);
  for (auto* rec : members) AnswerAssignment(*rec);
}

void Coordinator::AwaitAssignment(const Request& req, int64_t now_ms, Responder respond) {
  const AwaitAssignmentRequest& a = req.await_assignment();
  auto it = members_.find(a.member_id());
  if (it == members_.end()) {
    Response resp;
    resp.set_id(req.id());
    resp.set_code(static_cast<int>(StatusCode::kNotFound));
    resp.set_error("unknown member " + a.member_id());
    respond(std::move(resp));
    return;
  }
  MemberRecord& rec = it->second;
  rec.awaiting = std::move(respond);  // a newer poll replaces one its client gave up on
  rec.awaiting_id = req.id();
  Member& m = rec.member;
  Job& job = jobs_.at(m.job_id());
  if (InGeneration(m) && a.ended_generation() > 0 && a.ended_generation() == m.generation() &&
      job.state() == JOB_RUNNING) {
    // The end of the member's generation, as it saw it. Reports are idempotent: a
    // worker repeats its report until it is answered.
    const bool first = m.reported_generation() != a.ended_generation();
    m.set_reported_generation(a.ended_generation());
    m.set_committed_step(a.committed_step());
    m.set_has_state(a.has_state());
    if (a.leaving()) m.set_state(MEMBER_LEAVING);  // its Leave may not have arrived yet
    (void)SaveMember(m);
    job.set_committed_step(std::max(job.committed_step(), a.committed_step()));
    if (a.has_ledger() && a.ledger().ranges_size() > 0) {
      Status s = ledgers_.Offer(job.id(), a.ledger());
      if (!s.ok()) SHOAL_LOG_WARN("ledger from {}: {}", m.id(), s.ToString());
    }
    if (m.generation() == job.generation()) {
      if (a.failed())
        EndGeneration(job, REGROUP_NOW, "rank " + std::to_string(m.rank()) + " reported: " + a.error(), now_ms);
      else if (job.regroup() == REGROUP_NONE)
        EndGeneration(job, REGROUP_AT_BOUNDARY,
                      a.leaving() ? m.id() + " (rank " + std::to_string(m.rank()) + ") leaves"
                                  : m.id() + " ended generation " + std::to_string(m.generation()),
                      now_ms);
      first_report_ms_.emplace(job.id(), now_ms);
      if (first)
        SHOAL_LOG_INFO("job {}: {} (rank {}) reported the end of generation {} at step {}{}", job.id(), m.id(), m.rank(),
                       m.generation(), a.committed_step(), a.failed() ? " (failed: " + a.error() + ")" : "");
      MaybeFormNextGeneration(job, now_ms);
    }
  }
  AnswerAssignment(rec);
}

void Coordinator::AnswerAssignment(MemberRecord& rec) {
  if (!rec.awaiting) return;
  const Member& m = rec.member;
  const Job& job = jobs_.at(m.job_id());
  Response resp;
  resp.set_id(rec.awaiting_id);
  const bool placed = m.state() == MEMBER_ACTIVE && m.generation() == job.generation() &&
                      m.reported_generation() < m.generation() && job.state() == JOB_RUNNING;
  if (placed) {
    Assignment* a = resp.mutable_assignment();
    a->set_job_id(job.id());
    a->set_member_id(m.id());
    a->set_generation(m.generation());
    a->set_rank(m.rank());
    a->set_world_size(job.world_size());
    *a->mutable_spec() = job.spec();
    a->set_kv_prefix(KvScope(job.id(), m.generation()));
    a->set_lineage_digest(lineage_.HeadOf(job.id(), m.generation()));
    Generation gen;
    auto stored = store_->Get(GenKey(job.id(), m.generation()));
    if (stored.ok() && gen.ParseFromString(*stored)) {
      a->set_state_source(gen.state_source());
      a->set_resume_checkpoint(gen.resume_checkpoint());
      // The steps before the checkpoint stay in the model's history: the ranks continue
      // the ledger (already cut back to it) instead of starting a new one.
      if (!gen.resume_checkpoint().empty()) *a->mutable_ledger() = ledgers_.Of(job.id());
      a->set_cause(gen.cause());
    } else {
      a->set_state_source(-1);
    }
  } else if (m.state() == MEMBER_LEFT || (m.state() == MEMBER_REGISTERED && job.state() == JOB_COMPLETED)) {
    resp.mutable_assignment()->set_exit(true);
    resp.mutable_assignment()->set_exit_reason(m.state() == MEMBER_LEFT ? "left: " + m.failure_reason()
                                                                        : "job " + job.id() + " completed");
  } else if (m.state() == MEMBER_DEAD) {
    resp.set_code(static_cast<int>(StatusCode::kFailedPrecondition));
    resp.set_error("fenced: " + m.id() + " was declared dead (" + m.failure_reason() +
                   "); register again to rejoin job " + job.id());
  } else if (IsTerminal(job.state())) {
    resp.set_code(static_cast<int>(StatusCode::kAborted));
    resp.set_error("no assignment: job " + job.id() + " is " + JobStateName(job.state()) +
                   (job.failure_reason().empty() ? "" : " (" + job.failure_reason() + ")"));
  } else {
    return;  // still waiting for a generation
  }
  Responder respond = std::move(rec.awaiting);
  rec.awaiting = nullptr;
  respond(std::move(resp));
}

void Coordinator::EndGeneration(Job& job, RegroupMode mode, const std::string& cause, int64_t now_ms) {
  if (job.state() != JOB_RUNNING) return;
  if (job.regroup() == REGROUP_NONE) {
    job.set_regroup(mode);
    job.set_regroup_cause(cause);
    job.set_regroup_since_ms(now_ms);
  } else if (mode == REGROUP_NOW && job.regroup() == REGROUP_AT_BOUNDARY) {
    job.set_regroup(REGROUP_NOW);  // a failure does not wait for the planned boundary
    job.set_regroup_cause(job.regroup_cause() + "; " + cause);
  } else {
    return;
  }
  // Nobody may finish building this generation's communicator any more: answer its
  // pending rendezvous now instead of at their deadline.
  if (mode == REGROUP_NOW) kv_.DropPrefix(KvScope(job.id(), job.generation()));
  (void)SaveJob(job);
  AddEvent(job.id(), "generation_ending",
           std::to_string(job.generation()) + (mode == REGROUP_NOW ? " ends now: " : " ends at the next boundary: ") + cause,
           now_ms);
}

void Coordinator::MarkGone(MemberRecord& rec, MemberState state, const std::string& why, int64_t now_ms) {
  Member& m = rec.member;
  m.set_state(state);
  m.set_failure_reason(why);
  (void)SaveMember(m);
  AddEvent(m.job_id(), state == MEMBER_DEAD ? "member_dead" : "member_left", m.id() + ": " + why, now_ms);
  AnswerAssignment(rec);
}

void Coordinator::RestartFixedJob(Job& job, const std::string& cause, int64_t now_ms) {
  if (job.state() != JOB_RUNNING) return;
  const int budget = job.spec().workers().max_restarts();
  if (job.restarts() >= budget) {
    EndJob(job, JOB_FAILED,
           cause + "; the job's backend cannot regroup and its " + std::to_string(budget) +
               " restart(s) (workers.max_restarts) are used up",
           now_ms);
    return;
  }
  job.set_restarts(job.restarts() + 1);
  const std::string why = "restart " + std::to_string(job.restarts()) + " of " + std::to_string(budget) +
                          " from the latest checkpoint (the backend cannot regroup): " + cause;
  for (auto* rec : CurrentMembers(job)) MarkGone(*rec, MEMBER_DEAD, why, now_ms);
  job.set_regroup(REGROUP_NOW);
  job.set_regroup_cause(why);
  job.set_regroup_since_ms(now_ms);
  job.set_below_min_since_ms(now_ms);  // the new workers have workers.min_grace_s to come
  (void)SaveJob(job);
  kv_.DropPrefix(KvScope(job.id(), job.generation()));
  AddEvent(job.id(), "restart", why, now_ms);
  MaybeFormRestartedGeneration(job, now_ms);
}

void Coordinator::MaybeFormRestartedGeneration(Job& job, int64_t now_ms) {
  const WorkersSpec& w = job.spec().workers();
  auto joiners = MembersOf(job.id(), MEMBER_REGISTERED);
  // All the ranks of the new launch: its size when a launcher gave one.
  const int need = !joiners.empty() && joiners[0]->member.launcher_size() > 0 ? joiners[0]->member.launcher_size()
                                                                              : w.initial();
  if (static_cast<int>(joiners.size()) < need) {
    if ((now_ms - job.below_min_since_ms()) / 1000.0 >= w.min_grace_s())
      EndJob(job, JOB_FAILED,
             job.regroup_cause() + "; only " + std::to_string(joiners.size()) + " of " + std::to_string(need) +
                 " worker(s) registered again within workers.min_grace_s " + Seconds(w.min_grace_s()),
             now_ms);
    return;
  }
  std::stable_sort(joiners.begin(), joiners.end(),
                   [](auto* a, auto* b) { return a->member.launcher_rank() < b->member.launcher_rank(); });
  joiners.resize(need);
  const std::string cause = job.regroup_cause();
  FormGeneration(job, joiners, cause, now_ms);
}

void Coordinator::MaybeFormNextGeneration(Job& job, int64_t now_ms) {
  if (job.state() != JOB_RUNNING || job.regroup() == REGROUP_NONE) return;
  if (job.fixed_membership()) return MaybeFormRestartedGeneration(job, now_ms);
  const WorkersSpec& w = job.spec().workers();
  auto current = CurrentMembers(job);
  std::vector<MemberRecord*> silent;
  for (auto* rec : current)
    if (rec->member.reported_generation() < job.generation()) silent.push_back(rec);
  if (!silent.empty()) {
    auto first = first_report_ms_.find(job.id());
    if (first == first_report_ms_.end()) return;  // nobody reported yet: heartbeats tell them
    const double waited = (now_ms - first->second) / 1000.0;
    if (waited < w.regroup_window_s()) return;
    for (auto* rec : silent)
      MarkGone(*rec, MEMBER_DEAD,
               "did not report the end of generation " + std::to_string(job.generation()) + " within " +
                   Seconds(w.regroup_window_s()),
               now_ms);
  }
  std::vector<Candidate> survivors;
  for (auto* rec : CurrentMembers(job)) survivors.push_back({rec->member.id(), rec->member.state() == MEMBER_LEAVING});
  std::vector<std::string> joiners;
  for (auto* rec : MembersOf(job.id(), MEMBER_REGISTERED)) joiners.push_back(rec->member.id());
  GenerationPlan plan = PlanGeneration(survivors, joiners, w.max(), job.target_size());
  for (const std::string& id : plan.leave) {
    MemberRecord& rec = members_.at(id);
    MarkGone(rec, MEMBER_LEFT,
             (rec.member.state() == MEMBER_LEAVING ? "left" : "left: beyond the job's size") + std::string(" at step ") +
                 std::to_string(rec.member.committed_step()),
             now_ms);
  }
  if (static_cast<int>(plan.members.size()) < w.min()) {
    if (job.below_min_since_ms() == 0) {
      job.set_below_min_since_ms(now_ms);
      (void)SaveJob(job);
      AddEvent(job.id(), "below_min",
               std::to_string(plan.members.size()) + " member(s) left, below workers.min " + std::to_string(w.min()) +
                   "; waiting up to " + Seconds(w.min_grace_s()) + " for workers to join",
               now_ms);
    }
    if ((now_ms - job.below_min_since_ms()) / 1000.0 >= w.min_grace_s())
      EndJob(job, JOB_FAILED,
             "only " + std::to_string(plan.members.size()) + " worker(s) left, below workers.min " +
                 std::to_string(w.min()) + ", and none joined within workers.min_grace_s " + Seconds(w.min_grace_s()),
             now_ms);
    return;
  }
  std::vector<MemberRecord*> next;
  for (const std::string& id : plan.members) next.push_back(&members_.at(id));
  const std::string cause = job.regroup_cause();  // FormGeneration clears the job's
  FormGeneration(job, next, cause, now_ms);
}

Status Coordinator::Heartbeat(const HeartbeatRequest& req, int64_t now_ms, HeartbeatResponse* out) {
  auto it = members_.find(req.member_id());
  if (it == members_.end()) return NotFound("unknown member " + req.member_id());
  Member& m = it->second.member;
  Job& job = jobs_.at(m.job_id());
  out->set_job_state(job.state());
  out->set_generation(job.generation());
  // The real clock, not now_ms (a test's fake one): workers align their trace files to it.
  out->set_server_unix_us(std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count());
  if (m.state() == MEMBER_DEAD || m.state() == MEMBER_LEFT) {
    // Fenced: a stale member learns it, and nothing it says changes the job.
    out->set_fenced(true);
    out->set_fence_reason(m.id() + " is " + MemberStateName(m.state()) + ": " + m.failure_reason());
    return OkStatus();
  }
  m.set_last_heartbeat_ms(now_ms);
  if (req.has_metrics()) *m.mutable_metrics() = req.metrics();
  const bool current = InGeneration(m) && m.generation() == job.generation() && req.generation() == job.generation();
  if (current) ObserveHeartbeat(job, it->second, now_ms);
  if (current && m.rank() == 0 && req.ledger().ranges_size() > 0) {
    Status s = ledgers_.Offer(job.id(), req.ledger());
    if (!s.ok()) SHOAL_LOG_WARN("ledger from {}: {}", m.id(), s.ToString());
  }
  if (job.state() == JOB_RUNNING && req.metrics().total_steps() > 0 && job.total_steps() != req.metrics().total_steps()) {
    job.set_total_steps(req.metrics().total_steps());
    RETURN_IF_ERROR(SaveJob(job));
  }
  // What a heartbeat changes is its metrics and time, which a restarted coordinator
  // resets anyway (Load gives every member a fresh grace period): persisting them at
  // most every kHeartbeatPersistMs keeps RocksDB off the path of every heartbeat
  // (10,000 workers at 1/s were 10,000 writes/s).
  if (now_ms - it->second.heartbeat_saved_ms >= kHeartbeatPersistMs) {
    RETURN_IF_ERROR(SaveMember(m));
    it->second.heartbeat_saved_ms = now_ms;
  }
  if (InGeneration(m)) out->set_regroup(m.generation() == job.generation() ? job.regroup() : REGROUP_NOW);
  return OkStatus();
}

Status Coordinator::Leave(const LeaveRequest& req, int64_t now_ms) {
  auto it = members_.find(req.member_id());
  if (it == members_.end()) return NotFound("unknown member " + req.member_id());
  MemberRecord& rec = it->second;
  Job& job = jobs_.at(rec.member.job_id());
  if (IsTerminal(job.state())) return OkStatus();
  switch (rec.member.state()) {
    case MEMBER_REGISTERED:
      MarkGone(rec, MEMBER_LEFT, "left before it was placed in a generation", now_ms);
      return OkStatus();
    case MEMBER_ACTIVE:
      if (job.fixed_membership())
        return FailedPrecondition("job " + job.id() + " cannot regroup (backend mpi): a leave would end it");
      rec.member.set_state(MEMBER_LEAVING);
      (void)SaveMember(rec.member);
      EndGeneration(job, REGROUP_AT_BOUNDARY, rec.member.id() + " (rank " + std::to_string(rec.member.rank()) + ") leaves",
                    now_ms);
      return OkStatus();
    default: return OkStatus();  // already leaving, or gone
  }
}

Status Coordinator::Scale(const ScaleRequest& req, int64_t now_ms, ScaleResponse* out) {
  auto it = jobs_.find(req.job_id());
  if (it == jobs_.end()) return NotFound("unknown job " + req.job_id());
  Job& job = it->second;
  const WorkersSpec& w = job.spec().workers();
  if (IsTerminal(job.state())) return FailedPrecondition("job " + job.id() + " has ended (" + JobStateName(job.state()) + ")");
  if (job.fixed_membership()) return FailedPrecondition("job " + job.id() + " cannot regroup (backend mpi)");
  if (req.size() < w.min() || req.size() > w.max())
    return InvalidArgument("size " + std::to_string(req.size()) + " is outside [workers.min, workers.max] = [" +
                           std::to_string(w.min()) + ", " + std::to_string(w.max()) + "]");
  job.set_target_size(req.size());
  RETURN_IF_ERROR(SaveJob(job));
  AddEvent(job.id(), "scale", "target size " + std::to_string(req.size()), now_ms);
  std::vector<MemberRecord*> staying;
  for (auto* rec : CurrentMembers(job))
    if (rec->member.state() == MEMBER_ACTIVE) staying.push_back(rec);
  const int active = static_cast<int>(staying.size());
  if (job.state() == JOB_RUNNING) {
    if (active > req.size()) {
      for (int k = active - 1; k >= req.size(); --k) {  // the highest ranks leave
        staying[k]->member.set_state(MEMBER_LEAVING);
        (void)SaveMember(staying[k]->member);
      }
      EndGeneration(job, REGROUP_AT_BOUNDARY, "scale to " + std::to_string(req.size()), now_ms);
    } else if (active < req.size() && !MembersOf(job.id(), MEMBER_REGISTERED).empty()) {
      EndGeneration(job, REGROUP_AT_BOUNDARY, "scale to " + std::to_string(req.size()), now_ms);
    }
  } else {
    FormFirstGeneration(job, now_ms);  // a lower target may be reached already
  }
  out->set_target_size(req.size());
  out->set_active(active);
  return OkStatus();
}

Status Coordinator::GenerationReport(const GenerationReportRequest& req, int64_t now_ms) {
  auto it = members_.find(req.member_id());
  if (it == members_.end()) return NotFound("unknown member " + req.member_id());
  const Member& m = it->second.member;
  const double total = req.detect_seconds() + req.regroup_seconds() + req.rendezvous_seconds() + req.sync_seconds() +
                       req.first_step_seconds();
  AddEvent(m.job_id(), "regrouped",
           "generation " + std::to_string(req.generation()) + " trains from step " + std::to_string(req.step()) +
               ": detect " + Seconds(req.detect_seconds()) + ", regroup " + Seconds(req.regroup_seconds()) +
               ", rendezvous " + Seconds(req.rendezvous_seconds()) + ", sync " + Seconds(req.sync_seconds()) +
               ", first step " + Seconds(req.first_step_seconds()) + " (" + Seconds(total) + " in all)",
           now_ms,
           {{"generation", static_cast<double>(req.generation())},
            {"detect_s", req.detect_seconds()},
            {"regroup_s", req.regroup_seconds()},
            {"rendezvous_s", req.rendezvous_seconds()},
            {"sync_s", req.sync_seconds()},
            {"first_step_s", req.first_step_seconds()},
            {"total_s", total},
            {"first_step_unix_ms", static_cast<double>(req.first_step_unix_ms())},
            {"step", static_cast<double>(req.step())}});
  return OkStatus();
}

void Coordinator::DetectDeadMembers(int64_t now_ms) {
  for (auto& [id, rec] : members_) {
    Member& m = rec.member;
    if (m.state() != MEMBER_ACTIVE && m.state() != MEMBER_LEAVING && m.state() != MEMBER_REGISTERED) continue;
    Job& job = jobs_.at(m.job_id());
    if (IsTerminal(job.state())) continue;
    // Compared in seconds, like the regroup window: truncating timeout_s * 1000 to whole
    // milliseconds (2.01 s gives 2009.99.. -> 2009 ms) declared members dead at exactly
    // the timeout instead of past it.
    const double silent_s = (now_ms - m.last_heartbeat_ms()) / 1000.0;
    if (silent_s <= job.spec().workers().heartbeat_timeout_s()) continue;
    LoseMember(rec, "no heartbeat for " + Seconds(silent_s), now_ms);
  }
}

void Coordinator::LoseMember(MemberRecord& rec, const std::string& why, int64_t now_ms) {
  Member& m = rec.member;
  Job& job = jobs_.at(m.job_id());
  const bool in_generation = InGeneration(m) && m.generation() == job.generation();
  MarkGone(rec, MEMBER_DEAD, why, now_ms);
  if (!in_generation || job.state() != JOB_RUNNING) return;
  const std::string cause = m.id() + " (rank " + std::to_string(m.rank()) + ") died: " + why;
  if (job.fixed_membership()) {
    RestartFixedJob(job, "member " + cause, now_ms);
  } else {
    EndGeneration(job, REGROUP_NOW, cause, now_ms);
  }
}

Status Coordinator::ReportExit(const ReportExitRequest& req, int64_t now_ms, ReportExitResponse* out) {
  auto job = jobs_.find(req.job_id());
  if (job == jobs_.end()) return NotFound("unknown job '" + req.job_id() + "'");
  if (req.pid() <= 0) return InvalidArgument("report_exit: pid " + std::to_string(req.pid()) + " is not a process id");
  for (auto& [id, rec] : members_) {
    const Member& m = rec.member;
    if (m.job_id() != req.job_id() || m.pid() != req.pid() || m.host() != req.host()) continue;
    if (m.state() != MEMBER_ACTIVE && m.state() != MEMBER_LEAVING && m.state() != MEMBER_REGISTERED) continue;
    out->set_member_id(m.id());
    if (IsTerminal(job->second.state())) return OkStatus();
    LoseMember(rec, "process " + (req.how().empty() ? std::string("exited") : req.how()) + " (reported by its launcher)",
               now_ms);
    MaybeFormNextGeneration(job->second, now_ms);  // the others may all have reported already
    return OkStatus();
  }
  return OkStatus();  // it had left or finished, or never registered
}

}  // namespace shoal

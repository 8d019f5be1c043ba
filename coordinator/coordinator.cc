// Coordinator request handling: jobs, membership by generations, heartbeats.
#include "coordinator/coordinator.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "common/log.h"
#include "spec/jobspec_loader.h"

namespace shoal {

namespace {
std::string GenKey(const std::string& job, int64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%010lld", static_cast<long long>(n));
  return "gen/" + job + "/" + buf;
}

std::string NewJobId(const std::string& name) {
  static std::mt19937_64 rng(std::random_device{}());
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%06x", static_cast<unsigned>(rng() & 0xffffff));
  return name + "-" + buf;
}

bool ValidJobId(const std::string& id) {
  if (id.empty() || id.size() > 80) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; });
}

template <typename Proto>
StatusOr<Proto> ParseProto(const std::string& bytes, const std::string& key) {
  Proto p;
  if (!p.ParseFromString(bytes)) return DataLoss("state entry " + key + " is corrupt");
  return p;
}
}  // namespace

bool IsTerminal(JobState s) { return s == JOB_COMPLETED || s == JOB_FAILED || s == JOB_CANCELLED; }

std::string JobStateName(JobState s) {
  switch (s) {
    case JOB_PENDING: return "pending";
    case JOB_RUNNING: return "running";
    case JOB_COMPLETED: return "completed";
    case JOB_FAILED: return "failed";
    case JOB_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

std::string MemberStateName(MemberState s) {
  switch (s) {
    case MEMBER_REGISTERED: return "registered";
    case MEMBER_ACTIVE: return "active";
    case MEMBER_FINISHED: return "finished";
    case MEMBER_DEAD: return "dead";
    case MEMBER_LEFT: return "left";
    default: return "unknown";
  }
}

Coordinator::Coordinator(std::unique_ptr<StateStore> store) : store_(std::move(store)), kv_(store_.get()) {}

Status Coordinator::Load(int64_t now_ms) {
  ASSIGN_OR_RETURN(auto jobs, store_->Scan("job/"));
  for (auto& [k, v] : jobs) {
    ASSIGN_OR_RETURN(Job job, ParseProto<Job>(v, k));
    jobs_[job.id()] = job;
  }
  ASSIGN_OR_RETURN(auto members, store_->Scan("member/"));
  for (auto& [k, v] : members) {
    ASSIGN_OR_RETURN(Member m, ParseProto<Member>(v, k));
    // Live members get a fresh grace period: they could not reach us while we were down.
    m.set_last_heartbeat_ms(now_ms);
    auto& idx = next_member_index_[m.job_id()];
    idx = std::max(idx, std::atoi(m.id().substr(m.id().rfind("/m") + 2).c_str()) + 1);
    members_[m.id()].member = m;
  }
  RETURN_IF_ERROR(kv_.Load());
  auto seq = store_->Get("meta/next_event_seq");
  if (seq.ok()) next_event_seq_ = std::stoll(*seq);
  SHOAL_LOG_INFO("loaded {} job(s) and {} member(s) from the state store", jobs_.size(), members_.size());
  return OkStatus();
}

const Job* Coordinator::FindJob(const std::string& id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

std::vector<Event> Coordinator::EventsOf(const std::string& job_id) const {
  std::vector<Event> out;
  auto entries = store_->Scan("event/" + job_id + "/");
  if (!entries.ok()) return out;
  for (auto& [k, v] : *entries) {
    Event e;
    if (e.ParseFromString(v)) out.push_back(e);
  }
  return out;
}

Status Coordinator::SaveJob(const Job& job) { return store_->Put("job/" + job.id(), job.SerializeAsString()); }
Status Coordinator::SaveMember(const Member& m) {
  return store_->Put("member/" + m.job_id() + "/" + m.id(), m.SerializeAsString());
}

void Coordinator::AddEvent(const std::string& job_id, const std::string& kind, const std::string& detail, int64_t now_ms) {
  Event e;
  e.set_seq(next_event_seq_++);
  e.set_unix_ms(now_ms);
  e.set_job_id(job_id);
  e.set_kind(kind);
  e.set_detail(detail);
  char seq[24];
  std::snprintf(seq, sizeof(seq), "%012lld", static_cast<long long>(e.seq()));
  Status s = store_->PutBatch({{"event/" + job_id + "/" + seq, e.SerializeAsString()},
                               {"meta/next_event_seq", std::to_string(next_event_seq_)}});
  if (!s.ok()) SHOAL_LOG_ERROR("cannot record event: {}", s.ToString());
  SHOAL_LOG_INFO("job {}: {} {}", job_id, kind, detail);
}

void Coordinator::Handle(const Request& req, int64_t now_ms, Responder respond) {
  Response resp;
  resp.set_id(req.id());
  Status s;
  switch (req.body_case()) {
    case Request::kSubmit: s = Submit(req.submit(), now_ms, resp.mutable_submit()); break;
    case Request::kCancel: s = Cancel(req.cancel(), now_ms, resp.mutable_cancel()); break;
    case Request::kStatus: FillStatus(req.status(), now_ms, resp.mutable_status()); break;
    case Request::kRegister: s = Register(req.register_(), now_ms, resp.mutable_register_()); break;
    case Request::kAwaitAssignment: AwaitAssignment(req, now_ms, std::move(respond)); return;
    case Request::kHeartbeat: s = Heartbeat(req.heartbeat(), now_ms, resp.mutable_heartbeat()); break;
    case Request::kFinish: s = Finish(req.finish(), now_ms); resp.mutable_finish(); break;
    case Request::kKvSet: s = kv_.Set(req.kv_set().key(), req.kv_set().value()); resp.mutable_kv_set(); break;
    case Request::kKvGet: {
      std::vector<std::string> keys(req.kv_get().keys().begin(), req.kv_get().keys().end());
      int64_t timeout = std::clamp<int64_t>(req.kv_get().timeout_ms(), 0, 600'000);
      uint64_t id = req.id();
      kv_.Get(keys, now_ms + timeout, [id, respond](const Status& st, const std::vector<std::string>& values) {
        Response r;
        r.set_id(id);
        r.set_code(static_cast<int>(st.code()));
        r.set_error(st.message());
        for (const auto& v : values) r.mutable_kv_get()->add_values(v);
        respond(std::move(r));
      });
      return;
    }
    case Request::kCheckpointCommit: s = CommitCheckpoint(req.checkpoint_commit().record(), now_ms); resp.mutable_checkpoint_commit(); break;
    case Request::kCheckpointList:
      for (auto& rec : CheckpointsOf(req.checkpoint_list().job_id())) *resp.mutable_checkpoint_list()->add_records() = rec;
      break;
    case Request::kEvents:
      for (const Event& e : EventsOf(req.events().job_id()))
        if (e.seq() > req.events().after_seq()) *resp.mutable_events()->add_events() = e;
      break;
    default: s = InvalidArgument("request has no recognised body"); break;
  }
  if (!s.ok()) {
    resp.clear_body();
    resp.set_code(static_cast<int>(s.code()));
    resp.set_error(s.message());
  }
  respond(std::move(resp));
}

Status Coordinator::Submit(const SubmitRequest& req, int64_t now_ms, SubmitResponse* out) {
  RETURN_IF_ERROR(ValidateJobSpec(req.spec()));
  std::string id = req.job_id().empty() ? NewJobId(req.spec().name()) : req.job_id();
  if (!ValidJobId(id)) return InvalidArgument("job id '" + id + "' must be 1-80 characters of [A-Za-z0-9._-]");
  if (jobs_.count(id)) return AlreadyExists("job " + id + " already exists");
  Job job;
  job.set_id(id);
  *job.mutable_spec() = req.spec();
  job.set_spec_yaml(req.spec_yaml().empty() ? JobSpecToYaml(req.spec()) : req.spec_yaml());
  job.set_spec_digest(JobSpecDigest(req.spec()));
  job.set_state(JOB_PENDING);
  job.set_created_ms(now_ms);
  job.set_updated_ms(now_ms);
  RETURN_IF_ERROR(SaveJob(job));
  jobs_[id] = job;
  AddEvent(id, "submitted", "spec " + job.spec_digest().substr(0, 12) + ", waiting for " +
                                std::to_string(req.spec().workers().initial()) + " worker(s)", now_ms);
  out->set_job_id(id);
  return OkStatus();
}

Status Coordinator::Cancel(const CancelRequest& req, int64_t now_ms, CancelResponse* out) {
  auto it = jobs_.find(req.job_id());
  if (it == jobs_.end()) return NotFound("unknown job " + req.job_id());
  if (!IsTerminal(it->second.state()))
    EndJob(it->second, JOB_CANCELLED, req.reason().empty() ? "cancelled by user" : req.reason(), now_ms);
  out->set_state(it->second.state());
  return OkStatus();
}

Status Coordinator::CommitCheckpoint(const CheckpointRecord& rec, int64_t now_ms) {
  if (!jobs_.count(rec.job_id())) return NotFound("unknown job " + rec.job_id());
  if (rec.step() < 0 || rec.manifest_digest().size() != 64) return InvalidArgument("malformed checkpoint record");
  CheckpointRecord stored = rec;
  stored.set_committed_ms(now_ms);
  char step[24];
  std::snprintf(step, sizeof(step), "%012lld", static_cast<long long>(rec.step()));
  RETURN_IF_ERROR(store_->Put("ckpt/" + rec.job_id() + "/" + step, stored.SerializeAsString()));
  AddEvent(rec.job_id(), "checkpoint", "step " + std::to_string(rec.step()) + " " + rec.manifest_digest().substr(0, 12) +
                                           (rec.signer_key_id().empty() ? " unsigned" : " signed by " + rec.signer_key_id()),
           now_ms);
  return OkStatus();
}

std::vector<CheckpointRecord> Coordinator::CheckpointsOf(const std::string& job_id) const {
  std::vector<CheckpointRecord> out;
  auto entries = store_->Scan("ckpt/" + job_id + "/");
  if (!entries.ok()) return out;
  for (auto& [k, v] : *entries) {
    CheckpointRecord r;
    if (r.ParseFromString(v)) out.push_back(r);
  }
  return out;
}

void Coordinator::FillStatus(const StatusRequest& req, int64_t now_ms, StatusResponse* out) const {
  out->set_now_ms(now_ms);
  for (const auto& [id, job] : jobs_) {
    if (!req.job_id().empty() && id != req.job_id()) continue;
    *out->add_jobs() = job;
    auto ckpts = CheckpointsOf(id);
    if (!ckpts.empty()) *out->add_latest_checkpoints() = ckpts.back();
    for (const auto& [mid, rec] : members_)
      if (rec.member.job_id() == id) *out->add_members() = rec.member;
  }
}

Status Coordinator::Register(const RegisterRequest& req, int64_t now_ms, RegisterResponse* out) {
  auto it = jobs_.find(req.job_id());
  if (it == jobs_.end()) return NotFound("unknown job '" + req.job_id() + "' (shoalctl status lists the jobs)");
  Job& job = it->second;
  if (IsTerminal(job.state()))
    return FailedPrecondition("job " + job.id() + " has already ended (" + JobStateName(job.state()) + ")");
  if (job.state() == JOB_RUNNING)
    return FailedPrecondition("job " + job.id() + " is running with a fixed membership of " +
                              std::to_string(job.world_size()) + "; it takes no new workers");
  int index = next_member_index_[job.id()]++;
  Member m;
  m.set_id(job.id() + "/m" + std::to_string(index));
  m.set_job_id(job.id());
  m.set_host(req.host());
  m.set_pid(req.pid());
  m.set_state(MEMBER_REGISTERED);
  m.set_rank(-1);
  m.set_last_heartbeat_ms(now_ms);
  m.set_launcher_rank(req.launcher_rank());
  m.set_launcher_size(req.launcher_size());
  m.mutable_metrics()->set_test_accuracy(-1);
  RETURN_IF_ERROR(SaveMember(m));
  members_[m.id()].member = m;
  AddEvent(job.id(), "registered", m.id() + " from " + req.host() + " pid " + std::to_string(req.pid()), now_ms);
  out->set_member_id(m.id());
  out->set_heartbeat_interval_s(job.spec().workers().heartbeat_interval_s());
  MaybeFormGeneration(job, now_ms);
  return OkStatus();
}

std::vector<Coordinator::MemberRecord*> Coordinator::MembersOf(const std::string& job_id, MemberState state) {
  std::vector<MemberRecord*> out;
  for (auto& [id, rec] : members_)
    if (rec.member.job_id() == job_id && rec.member.state() == state) out.push_back(&rec);
  return out;
}

void Coordinator::MaybeFormGeneration(Job& job, int64_t now_ms) {
  if (job.state() != JOB_PENDING) return;
  auto waiting = MembersOf(job.id(), MEMBER_REGISTERED);
  if (static_cast<int>(waiting.size()) < job.spec().workers().initial()) return;
  // Launcher ranks (mpirun/srun) fix the order so the MPI rank equals the Shoal rank.
  bool launched = std::all_of(waiting.begin(), waiting.end(), [](auto* r) { return r->member.launcher_rank() >= 0; });
  std::stable_sort(waiting.begin(), waiting.end(), [&](auto* a, auto* b) {
    if (launched) return a->member.launcher_rank() < b->member.launcher_rank();
    return std::atoi(a->member.id().substr(a->member.id().rfind("/m") + 2).c_str()) <
           std::atoi(b->member.id().substr(b->member.id().rfind("/m") + 2).c_str());
  });
  waiting.resize(job.spec().workers().initial());
  Generation gen;
  gen.set_job_id(job.id());
  gen.set_number(job.generation() + 1);
  gen.set_formed_ms(now_ms);
  std::vector<std::pair<std::string, std::string>> batch;
  for (size_t r = 0; r < waiting.size(); ++r) {
    Member& m = waiting[r]->member;
    m.set_state(MEMBER_ACTIVE);
    m.set_rank(static_cast<int>(r));
    m.set_generation(gen.number());
    gen.add_member_ids(m.id());
    batch.emplace_back("member/" + m.job_id() + "/" + m.id(), m.SerializeAsString());
  }
  job.set_state(JOB_RUNNING);
  job.set_generation(gen.number());
  job.set_world_size(static_cast<int>(waiting.size()));
  job.set_updated_ms(now_ms);
  batch.emplace_back(GenKey(job.id(), gen.number()), gen.SerializeAsString());
  batch.emplace_back("job/" + job.id(), job.SerializeAsString());
  Status s = store_->PutBatch(batch);  // one atomic write: ranks, generation, job state
  if (!s.ok()) SHOAL_LOG_ERROR("cannot persist generation: {}", s.ToString());
  AddEvent(job.id(), "generation", std::to_string(gen.number()) + " formed with " + std::to_string(waiting.size()) + " member(s)", now_ms);
  for (auto* rec : waiting) AnswerAssignment(*rec);
}

void Coordinator::AwaitAssignment(const Request& req, int64_t now_ms, Responder respond) {
  auto it = members_.find(req.await_assignment().member_id());
  Response resp;
  resp.set_id(req.id());
  if (it == members_.end()) {
    resp.set_code(static_cast<int>(StatusCode::kNotFound));
    resp.set_error("unknown member " + req.await_assignment().member_id());
    respond(std::move(resp));
    return;
  }
  it->second.awaiting = std::move(respond);
  it->second.awaiting_id = req.id();
  if (it->second.member.state() != MEMBER_REGISTERED) AnswerAssignment(it->second);
}

void Coordinator::AnswerAssignment(MemberRecord& rec) {
  if (!rec.awaiting) return;
  Response resp;
  resp.set_id(rec.awaiting_id);
  const Job& job = jobs_.at(rec.member.job_id());
  if (rec.member.state() == MEMBER_ACTIVE) {
    Assignment* a = resp.mutable_assignment();
    a->set_job_id(job.id());
    a->set_member_id(rec.member.id());
    a->set_generation(rec.member.generation());
    a->set_rank(rec.member.rank());
    a->set_world_size(job.world_size());
    *a->mutable_spec() = job.spec();
    a->set_kv_prefix(job.id() + "/gen-" + std::to_string(rec.member.generation()) + "/");
  } else {
    resp.set_code(static_cast<int>(StatusCode::kAborted));
    resp.set_error("no assignment: job " + job.id() + " is " + JobStateName(job.state()) +
                   (job.failure_reason().empty() ? "" : " (" + job.failure_reason() + ")"));
  }
  Responder respond = std::move(rec.awaiting);
  rec.awaiting = nullptr;
  respond(std::move(resp));
}

Status Coordinator::Heartbeat(const HeartbeatRequest& req, int64_t now_ms, HeartbeatResponse* out) {
  auto it = members_.find(req.member_id());
  if (it == members_.end()) return NotFound("unknown member " + req.member_id());
  Member& m = it->second.member;
  m.set_last_heartbeat_ms(now_ms);
  if (req.has_metrics()) *m.mutable_metrics() = req.metrics();
  const Job& job = jobs_.at(m.job_id());
  if (job.state() == JOB_RUNNING && req.metrics().total_steps() > 0 && job.total_steps() != req.metrics().total_steps()) {
    Job& mutable_job = jobs_.at(m.job_id());
    mutable_job.set_total_steps(req.metrics().total_steps());
    RETURN_IF_ERROR(SaveJob(mutable_job));
  }
  RETURN_IF_ERROR(SaveMember(m));
  out->set_job_state(job.state());
  out->set_generation(job.generation());
  return OkStatus();
}

Status Coordinator::Finish(const FinishRequest& req, int64_t now_ms) {
  auto it = members_.find(req.member_id());
  if (it == members_.end()) return NotFound("unknown member " + req.member_id());
  Member& m = it->second.member;
  Job& job = jobs_.at(m.job_id());
  if (req.has_metrics()) *m.mutable_metrics() = req.metrics();
  m.set_last_heartbeat_ms(now_ms);
  if (!req.success()) {
    m.set_state(MEMBER_DEAD);
    m.set_failure_reason(req.error());
    RETURN_IF_ERROR(SaveMember(m));
    if (!IsTerminal(job.state())) EndJob(job, JOB_FAILED, "rank " + std::to_string(m.rank()) + ": " + req.error(), now_ms);
    return OkStatus();
  }
  m.set_state(MEMBER_FINISHED);
  RETURN_IF_ERROR(SaveMember(m));
  if (m.rank() == 0 && req.has_result()) *job.mutable_result() = req.result();
  AddEvent(job.id(), "finished", m.id() + " (rank " + std::to_string(m.rank()) + ")", now_ms);
  if (job.state() == JOB_RUNNING && MembersOf(job.id(), MEMBER_ACTIVE).empty()) {
    // GPU accounting is per job: every worker's GPU-seconds and energy, summed.
    double gpu_s = 0, joules = 0;
    for (auto* rec : MembersOf(job.id(), MEMBER_FINISHED)) {
      gpu_s += rec->member.metrics().gpu_seconds();
      joules += rec->member.metrics().gpu_energy_joules();
    }
    job.mutable_result()->set_gpu_seconds(gpu_s);
    job.mutable_result()->set_energy_joules(joules);
    EndJob(job, JOB_COMPLETED, "", now_ms);
  }
  else
    RETURN_IF_ERROR(SaveJob(job));
  return OkStatus();
}

void Coordinator::EndJob(Job& job, JobState state, const std::string& reason, int64_t now_ms) {
  job.set_state(state);
  job.set_failure_reason(reason);
  job.set_updated_ms(now_ms);
  Status s = SaveJob(job);
  if (!s.ok()) SHOAL_LOG_ERROR("cannot persist job {}: {}", job.id(), s.ToString());
  AddEvent(job.id(), JobStateName(state), reason, now_ms);
  for (auto* rec : MembersOf(job.id(), MEMBER_REGISTERED)) AnswerAssignment(*rec);
  kv_.DropPrefix(job.id() + "/");
}

void Coordinator::Tick(int64_t now_ms) {
  kv_.Expire(now_ms);
  for (auto& [id, rec] : members_) {
    Member& m = rec.member;
    if (m.state() != MEMBER_ACTIVE && m.state() != MEMBER_REGISTERED) continue;
    Job& job = jobs_.at(m.job_id());
    if (IsTerminal(job.state())) continue;
    int64_t timeout_ms = static_cast<int64_t>(job.spec().workers().heartbeat_timeout_s() * 1000);
    if (now_ms - m.last_heartbeat_ms() <= timeout_ms) continue;
    std::string why = "no heartbeat for " + std::to_string((now_ms - m.last_heartbeat_ms()) / 1000.0).substr(0, 4) + " s";
    bool was_active = m.state() == MEMBER_ACTIVE;
    m.set_state(MEMBER_DEAD);
    m.set_failure_reason(why);
    (void)SaveMember(m);
    AddEvent(job.id(), "member_dead", m.id() + ": " + why, now_ms);
    if (rec.awaiting) AnswerAssignment(rec);
    // Membership is fixed within a generation and regrouping is not implemented yet:
    // losing an active member ends the job rather than hanging its peers.
    if (was_active) EndJob(job, JOB_FAILED, "member " + m.id() + " (rank " + std::to_string(m.rank()) + ") died: " + why, now_ms);
  }
}

}  // namespace shoal

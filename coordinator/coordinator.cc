// Coordinator request handling: dispatch, jobs, events, checkpoints and the ledger.
// Membership (registration, heartbeats, generations) is in members.cc.
#include "coordinator/coordinator.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "common/log.h"
#include "coordinator/usage.h"
#include "lineage/openlineage.h"
#include "spec/jobspec_loader.h"

namespace shoal {

namespace {
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

// Load's checks of stored state (STYLE 23: stored state is input too). The code after
// Load trusts what they check: that every member's job exists (jobs_.at; a member
// without its job was fuzz_coordinator_state's first crash), that the numbers it does
// arithmetic on are far from overflow, that a live job's spec is one Submit would have
// accepted (workers.initial sizes a vector).
Status Corrupt(const std::string& key, const std::string& what) {
  return DataLoss("state entry " + key + " is corrupt: " + what);
}

// Times and counters real state holds are far below this; 2^53 leaves room to add to
// them (gen.number + 1, now_ms - below_min_since_ms) without overflowing int64.
constexpr int64_t kMaxStoredNumber = int64_t{1} << 53;
bool Plausible(int64_t v) { return v >= 0 && v <= kMaxStoredNumber; }

Status CheckStoredJob(const std::string& key, const Job& job) {
  if (key != "job/" + job.id() || !ValidJobId(job.id())) return Corrupt(key, "it holds job '" + job.id() + "'");
  if (!JobState_IsValid(job.state()) || job.state() == JOB_STATE_UNSPECIFIED || !RegroupMode_IsValid(job.regroup()))
    return Corrupt(key, "job state " + std::to_string(job.state()) + ", regroup " + std::to_string(job.regroup()));
  if (!Plausible(job.generation()) || !Plausible(job.below_min_since_ms()) || job.restarts() < 0)
    return Corrupt(key, "generation " + std::to_string(job.generation()) + ", below_min_since_ms " +
                            std::to_string(job.below_min_since_ms()) + ", restarts " + std::to_string(job.restarts()));
  // An ended job's spec is never used again: a rule added to ValidateJobSpec since it
  // ran must not keep the coordinator from starting.
  Status spec = IsTerminal(job.state()) ? OkStatus() : ValidateJobSpec(job.spec());
  if (!spec.ok()) return Corrupt(key, "its spec is invalid: " + spec.message());
  return OkStatus();
}

// The k of a member id "<job>/m<k>", as Register makes it (decimal, no leading zero,
// small enough that k + 1 fits an int); -1 for any other id.
int StoredMemberIndex(const std::string& job_id, const std::string& id) {
  const std::string prefix = job_id + "/m";
  if (id.size() <= prefix.size() || id.size() > prefix.size() + 9 || id.compare(0, prefix.size(), prefix) != 0)
    return -1;
  int k = 0;
  for (size_t i = prefix.size(); i < id.size(); ++i) {
    if (id[i] < '0' || id[i] > '9') return -1;
    k = k * 10 + (id[i] - '0');
  }
  return std::to_string(k) == id.substr(prefix.size()) ? k : -1;
}
}  // namespace

std::string GenKey(const std::string& job, int64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%010lld", static_cast<long long>(n));
  return "gen/" + job + "/" + buf;
}

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
    case MEMBER_LEAVING: return "leaving";
    default: return "unknown";
  }
}

Coordinator::Coordinator(std::unique_ptr<StateStore> store)
    : store_(std::move(store)), kv_(store_.get()), checkpoints_(store_.get()), ledgers_(store_.get()), lineage_(store_.get()) {}

Status Coordinator::Load(int64_t now_ms) {
  ASSIGN_OR_RETURN(auto jobs, store_->Scan("job/"));
  for (auto& [k, v] : jobs) {
    ASSIGN_OR_RETURN(Job job, ParseProto<Job>(v, k));
    RETURN_IF_ERROR(CheckStoredJob(k, job));
    jobs_[job.id()] = job;
  }
  ASSIGN_OR_RETURN(auto members, store_->Scan("member/"));
  for (auto& [k, v] : members) {
    ASSIGN_OR_RETURN(Member m, ParseProto<Member>(v, k));
    // Live members get a fresh grace period: they could not reach us while we were down.
    m.set_last_heartbeat_ms(now_ms);
    const int index = StoredMemberIndex(m.job_id(), m.id());
    if (index < 0) return DataLoss("state entry " + k + " has a malformed member id '" + m.id() + "'");
    // Every handler looks a member's job up with jobs_.at(): a member without its job
    // would throw std::out_of_range at its first request.
    if (!jobs_.count(m.job_id())) return Corrupt(k, "member " + m.id() + " of unknown job '" + m.job_id() + "'");
    if (k != "member/" + m.job_id() + "/" + m.id()) return Corrupt(k, "it holds member '" + m.id() + "'");
    if (!MemberState_IsValid(m.state()) || m.state() == MEMBER_STATE_UNSPECIFIED)
      return Corrupt(k, "member state " + std::to_string(m.state()));
    auto& idx = next_member_index_[m.job_id()];
    idx = std::max(idx, index + 1);
    members_[m.id()].member = m;
  }
  // Generations are read back when a member is answered its assignment: each must be
  // one its job formed, of members that exist, with a state source among them.
  ASSIGN_OR_RETURN(auto gens, store_->Scan("gen/"));
  for (auto& [k, v] : gens) {
    ASSIGN_OR_RETURN(Generation g, ParseProto<Generation>(v, k));
    auto job = jobs_.find(g.job_id());
    if (job == jobs_.end() || k != GenKey(g.job_id(), g.number()) || g.number() < 1 ||
        g.number() > job->second.generation())
      return Corrupt(k, "generation " + std::to_string(g.number()) + " of job '" + g.job_id() + "'");
    for (const std::string& id : g.member_ids()) {
      auto m = members_.find(id);
      if (m == members_.end() || m->second.member.job_id() != g.job_id())
        return Corrupt(k, "generation " + std::to_string(g.number()) + " names unknown member '" + id + "'");
    }
    if (g.state_source() < -1 || g.state_source() >= g.member_ids_size())
      return Corrupt(k, "state source rank " + std::to_string(g.state_source()) + " of " +
                            std::to_string(g.member_ids_size()) + " member(s)");
  }
  RETURN_IF_ERROR(kv_.Load());
  RETURN_IF_ERROR(checkpoints_.CheckStored());
  RETURN_IF_ERROR(ledgers_.CheckStored());
  // A regroup in progress resumes: reports recorded before the restart still count
  // (reported_generation is stored), and the window starts again with the first report
  // a worker repeats to this process.
  auto seq = store_->Get("meta/next_event_seq");
  if (seq.ok()) {
    // Stored state is input too: no std::stoll that throws on a corrupt entry, and no
    // counter so large that the next event overflows it.
    char* end = nullptr;
    long long v = std::strtoll(seq->c_str(), &end, 10);
    if (end == seq->c_str() || *end != '\0' || v < 1 || v > kMaxStoredNumber)
      return DataLoss("state entry meta/next_event_seq is corrupt");
    next_event_seq_ = v;
  }
  SHOAL_LOG_INFO("loaded {} job(s) and {} member(s) from the state store", jobs_.size(), members_.size());
  return OkStatus();
}

const Job* Coordinator::FindJob(const std::string& id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const Member* Coordinator::FindMember(const std::string& id) const {
  auto it = members_.find(id);
  return it == members_.end() ? nullptr : &it->second.member;
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

void Coordinator::AddEvent(const std::string& job_id, const std::string& kind, const std::string& detail, int64_t now_ms,
                           const std::map<std::string, double>& figures) {
  Event e;
  for (const auto& [k, v] : figures) (*e.mutable_figures())[k] = v;
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
    case Request::kKvSet:
      s = CheckKvScope(req.kv_set().key());
      if (s.ok()) s = kv_.Set(req.kv_set().key(), req.kv_set().value());
      resp.mutable_kv_set();
      break;
    case Request::kKvGet: {
      std::vector<std::string> keys(req.kv_get().keys().begin(), req.kv_get().keys().end());
      for (const std::string& k : keys)
        if (s.ok()) s = CheckKvScope(k);
      if (!s.ok()) break;
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
    case Request::kCheckpointCommit: s = CommitCheckpoint(req.checkpoint_commit(), now_ms); resp.mutable_checkpoint_commit(); break;
    case Request::kLeave: s = Leave(req.leave(), now_ms); resp.mutable_leave(); break;
    case Request::kScale: s = Scale(req.scale(), now_ms, resp.mutable_scale()); break;
    case Request::kGenerationReport: s = GenerationReport(req.generation_report(), now_ms); resp.mutable_generation_report(); break;
    case Request::kLedger: s = GetLedger(req.ledger(), resp.mutable_ledger()); break;
    case Request::kReportExit: s = ReportExit(req.report_exit(), now_ms, resp.mutable_report_exit()); break;
    case Request::kCheckpointList:
      for (auto& rec : CheckpointsOf(req.checkpoint_list().job_id())) *resp.mutable_checkpoint_list()->add_records() = rec;
      break;
    case Request::kLineage: {
      auto found = lineage_.Lookup(req.lineage());
      if (found.ok()) *resp.mutable_lineage() = std::move(*found);
      s = found.status();
      break;
    }
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
  job.set_owner(req.owner());
  job.set_state(JOB_PENDING);
  job.set_created_ms(now_ms);
  job.set_updated_ms(now_ms);
  RETURN_IF_ERROR(SaveJob(job));
  jobs_[id] = job;
  // The job's inputs as the submitter described them (dataset, scan, its code), and what
  // only the coordinator can vouch for: the id, the spec's digest, the owner, the time.
  JobLineage lineage = req.lineage();
  lineage.set_job_id(id);
  lineage.set_name(req.spec().name());
  lineage.set_spec_digest(job.spec_digest());
  lineage.set_owner(req.owner());
  lineage.set_submitted_ms(now_ms);
  lineage.mutable_labels()->clear();
  for (const auto& [k, v] : req.spec().labels()) (*lineage.mutable_labels())[k] = v;
  *lineage.mutable_coordinator_code() = coordinator_code_;
  if (Status s = lineage_.RecordJob(lineage); !s.ok()) SHOAL_LOG_ERROR("cannot record lineage of {}: {}", id, s.ToString());
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

Status Coordinator::CommitCheckpoint(const CheckpointCommitRequest& req, int64_t now_ms) {
  const CheckpointRecord& rec = req.record();
  if (!jobs_.count(rec.job_id())) return NotFound("unknown job " + rec.job_id());
  if (!req.member_id().empty()) {
    // Fencing: a member declared dead (or of an older generation) commits nothing.
    auto it = members_.find(req.member_id());
    if (it == members_.end() || it->second.member.job_id() != rec.job_id())
      return NotFound("unknown member " + req.member_id());
    const Member& m = it->second.member;
    if (m.state() == MEMBER_DEAD || m.state() == MEMBER_LEFT || req.generation() < jobs_.at(rec.job_id()).generation())
      return FailedPrecondition("fenced: " + m.id() + " is " + MemberStateName(m.state()) + " in generation " +
                                std::to_string(req.generation()) + "; its checkpoint is not registered");
  }
  RETURN_IF_ERROR(checkpoints_.Commit(rec, now_ms));
  CheckpointLineage lineage;
  lineage.set_manifest_digest(rec.manifest_digest());
  lineage.set_job_id(rec.job_id());
  lineage.set_step(rec.step());
  lineage.set_generation(req.generation());
  lineage.set_path(rec.path());
  lineage.set_signer_key_id(rec.signer_key_id());
  lineage.set_parent_digest(rec.parent_digest());
  lineage.set_lineage_digest(rec.lineage_digest());
  lineage.set_committed_ms(now_ms);
  lineage.set_ledger_ranges(req.ledger().ranges_size());
  int64_t samples = 0;
  for (const LedgerRange& r : req.ledger().ranges()) samples += r.cursor_end() - r.cursor_begin();
  lineage.set_samples(samples);
  if (req.ledger().ranges_size() > 0) {
    lineage.set_epoch(req.ledger().ranges(req.ledger().ranges_size() - 1).epoch());
    lineage.set_cursor(req.ledger().ranges(req.ledger().ranges_size() - 1).cursor_end());
  }
  if (Status s = lineage_.RecordCheckpoint(lineage); !s.ok())
    SHOAL_LOG_ERROR("cannot record lineage of checkpoint step {}: {}", rec.step(), s.ToString());
  else
    EmitLineageEvent(rec.job_id(), "OTHER", now_ms, nullptr, {lineage});
  // The ledger up to the checkpoint: should the job roll back to it, the history it
  // ends is on record even if heartbeats had not carried it yet.
  if (req.ledger().ranges_size() > 0) {
    Status s = ledgers_.Offer(rec.job_id(), req.ledger());
    if (!s.ok()) SHOAL_LOG_WARN("ledger with checkpoint step {}: {}", rec.step(), s.ToString());
  }
  AddEvent(rec.job_id(), "checkpoint", "step " + std::to_string(rec.step()) + " " + rec.manifest_digest().substr(0, 12) +
                                           (rec.signer_key_id().empty() ? " unsigned" : " signed by " + rec.signer_key_id()),
           now_ms);
  return OkStatus();
}

Status Coordinator::GetLedger(const LedgerRequest& req, LedgerResponse* out) const {
  auto it = jobs_.find(req.job_id());
  if (it == jobs_.end()) return NotFound("unknown job " + req.job_id());
  *out->mutable_ledger() = ledgers_.Of(req.job_id());
  out->set_epochs(it->second.spec().training().epochs());
  out->set_max_steps(it->second.spec().training().max_steps());
  out->set_state(it->second.state());
  return OkStatus();
}

// Keys "<job>/gen-<n>/...": only the job's current generation may use them.
Status Coordinator::CheckKvScope(const std::string& key) const {
  const size_t at = key.find("/gen-");
  if (at == std::string::npos) return OkStatus();
  auto it = jobs_.find(key.substr(0, at));
  if (it == jobs_.end()) return OkStatus();
  const long long gen = std::atoll(key.c_str() + at + 5);
  if (gen < it->second.generation())
    return FailedPrecondition("fenced: key " + key + " belongs to generation " + std::to_string(gen) +
                              ", the job is in generation " + std::to_string(it->second.generation()));
  return OkStatus();
}

void Coordinator::FillStatus(const StatusRequest& req, int64_t now_ms, StatusResponse* out) const {
  out->set_now_ms(now_ms);
  for (const auto& [id, job] : jobs_) {
    if (!req.job_id().empty() && id != req.job_id()) continue;
    Job* shown = out->add_jobs();
    *shown = job;
    auto ckpts = CheckpointsOf(id);
    if (!ckpts.empty()) *out->add_latest_checkpoints() = ckpts.back();
    std::vector<const Member*> members;
    for (const auto& [mid, rec] : members_)
      if (rec.member.job_id() == id) {
        *out->add_members() = rec.member;
        members.push_back(&rec.member);
      }
    // Cost: every member it ever had, from its first generation to its end (or now).
    int64_t started_ms = 0;
    if (auto first = store_->Get(GenKey(id, 1)); first.ok()) {
      Generation g;
      if (g.ParseFromString(*first)) started_ms = g.formed_ms();
    }
    *shown->mutable_usage() =
        SumUsage(members, started_ms, IsTerminal(job.state()) ? job.updated_ms() : now_ms, ledgers_.Of(id));
  }
}

Status Coordinator::Finish(const FinishRequest& req, int64_t now_ms) {
  auto it = members_.find(req.member_id());
  if (it == members_.end()) return NotFound("unknown member " + req.member_id());
  Member& m = it->second.member;
  Job& job = jobs_.at(m.job_id());
  if (m.state() == MEMBER_DEAD || m.state() == MEMBER_LEFT) {
    // A fenced member's result is not the job's; its failure is no news either.
    return FailedPrecondition("fenced: " + m.id() + " is " + MemberStateName(m.state()));
  }
  if (req.has_metrics()) *m.mutable_metrics() = req.metrics();
  m.set_last_heartbeat_ms(now_ms);
  if (!req.success()) {
    const std::string cause = "rank " + std::to_string(m.rank()) + ": " + req.error();
    // A backend that cannot regroup restarts every worker instead (a worker also fails
    // when mpirun takes its ranks down after another one died).
    if (job.fixed_membership() && job.state() == JOB_RUNNING) {
      RestartFixedJob(job, cause, now_ms);
      return OkStatus();
    }
    m.set_state(MEMBER_DEAD);
    m.set_failure_reason(req.error());
    RETURN_IF_ERROR(SaveMember(m));
    if (!IsTerminal(job.state())) EndJob(job, JOB_FAILED, cause, now_ms);
    return OkStatus();
  }
  m.set_state(MEMBER_FINISHED);
  RETURN_IF_ERROR(SaveMember(m));
  if (m.rank() == 0 && req.has_result()) *job.mutable_result() = req.result();
  if (req.ledger().ranges_size() > 0) {
    Status s = ledgers_.Offer(job.id(), req.ledger());
    if (!s.ok()) SHOAL_LOG_WARN("ledger from {}: {}", m.id(), s.ToString());
  }
  AddEvent(job.id(), "finished", m.id() + " (rank " + std::to_string(m.rank()) + ")", now_ms);
  if (job.state() == JOB_RUNNING && MembersOf(job.id(), MEMBER_ACTIVE).empty() &&
      MembersOf(job.id(), MEMBER_LEAVING).empty()) {
    // GPU accounting is per job: every worker's GPU-seconds and energy, summed.
    double gpu_s = 0, joules = 0;
    for (auto* rec : MembersOf(job.id(), MEMBER_FINISHED)) {
      gpu_s += rec->member.metrics().gpu_seconds();
      joules += rec->member.metrics().gpu_energy_joules();
    }
    job.mutable_result()->set_gpu_seconds(gpu_s);
    job.mutable_result()->set_energy_joules(joules);
    EndJob(job, JOB_COMPLETED, "", now_ms);
  } else {
    RETURN_IF_ERROR(SaveJob(job));
  }
  return OkStatus();
}

void Coordinator::EmitLineageEvent(const std::string& job_id, const std::string& type, int64_t now_ms,
                                   const GenerationLineage* generation, const std::vector<CheckpointLineage>& outputs,
                                   const std::string& error) {
  if (!lineage_events_) return;
  auto job_lineage = lineage_.JobOf(job_id);
  if (!job_lineage.ok()) return;  // a job from before lineage was recorded
  LineageEventInput in;
  in.event_type = type;
  in.unix_ms = now_ms;
  in.job_namespace = lineage_namespace_;
  in.job = std::move(*job_lineage);
  in.generation = generation;
  in.outputs = outputs;
  in.error = error;
  auto job = jobs_.find(job_id);
  if (job != jobs_.end() && IsTerminal(job->second.state())) in.final_state = JobStateName(job->second.state());
  lineage_events_(BuildOpenLineageEvent(in));
}

void Coordinator::EndJob(Job& job, JobState state, const std::string& reason, int64_t now_ms) {
  job.set_state(state);
  job.set_failure_reason(reason);
  job.set_updated_ms(now_ms);
  job.set_regroup(REGROUP_NONE);
  Status s = SaveJob(job);
  if (!s.ok()) SHOAL_LOG_ERROR("cannot persist job {}: {}", job.id(), s.ToString());
  AddEvent(job.id(), JobStateName(state), reason, now_ms);
  if (lineage_events_) {
    auto record = lineage_.Of(job.id());  // every checkpoint: the run's outputs
    std::vector<CheckpointLineage> outputs;
    if (record.ok()) outputs.assign(record->checkpoints().begin(), record->checkpoints().end());
    const char* type = state == JOB_COMPLETED ? "COMPLETE" : state == JOB_CANCELLED ? "ABORT" : "FAIL";
    EmitLineageEvent(job.id(), type, now_ms, nullptr, outputs, state == JOB_COMPLETED ? "" : reason);
  }
  for (auto& [id, rec] : members_)
    if (rec.member.job_id() == job.id()) AnswerAssignment(rec);
  kv_.DropPrefix(job.id() + "/");
}

void Coordinator::Tick(int64_t now_ms) {
  kv_.Expire(now_ms);
  DetectDeadMembers(now_ms);
  for (auto& [id, job] : jobs_)
    if (job.state() == JOB_RUNNING) MaybeFormNextGeneration(job, now_ms);
  CheckStragglers(now_ms);
}

}  // namespace shoal

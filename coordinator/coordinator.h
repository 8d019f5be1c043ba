// The coordinator: jobs, membership by generations, rendezvous, heartbeats. Its state
// lives in a StateStore (RocksDB in production) so a restarted coordinator carries on.
//
// THE PROTOCOL, step by step (messages in proto/control.proto; transport is ZeroMQ,
// ROUTER here and DEALER in clients; every Request has an id its Response echoes):
//
//  1. Submit. shoalctl sends SubmitRequest{spec}. The coordinator validates it, stores
//     Job{state=PENDING}, appends an event and answers with the job id.
//  2. Register. Each worker sends RegisterRequest{job, host, pid, launcher rank/size}.
//     An unknown job is refused (kNotFound) and a finished one too (kFailedPrecondition).
//     The answer carries a member id ("<job>/m<k>") and the heartbeat interval. From
//     now on the worker heartbeats.
//  3. Await assignment. The worker sends AwaitAssignmentRequest, a long poll. When
//     `workers.initial` members have registered, the coordinator forms generation 1:
//     ranks 0..N-1 (in launcher-rank order when mpirun/srun gave one, else in
//     registration order), stores Generation{1, members}, sets the job RUNNING, and
//     answers every waiting member with its Assignment{generation, rank, world, spec,
//     kv_prefix="<job>/gen-1/", state_source}.
//  4. Rendezvous. Workers build their communicator through KvSet/KvGet under the
//     kv_prefix (Gloo addresses; the NCCL unique id). KvGet is a long poll answered
//     once every requested key exists, kDeadlineExceeded at its deadline, or kAborted
//     when its generation is superseded (its scope is dropped). A KvSet or KvGet for an
//     older generation's scope is refused: a fenced member cannot disturb a newer one.
//     Every member then takes rank state_source's state (parameters, optimizer, data
//     position, ledger) by broadcast; with state_source -1 no member holds state and
//     each loads resume_checkpoint (or starts from the spec).
//  5. Train. Each worker sends HeartbeatRequest{metrics, generation} every
//     `workers.heartbeat_interval_s` (rank 0 adds its data ledger); the answer carries
//     the job state (stop on CANCELLED or FAILED), the generation and how it is ending:
//       REGROUP_AT_BOUNDARY  a planned change (join, leave, scale) is pending: the
//                            member raises the flag its ranks exchange every few steps;
//                            the step whose exchange carries it is the generation's last.
//       REGROUP_NOW          a failure: abort the communicator and report at once.
//     A member silent for `heartbeat_timeout_s` (monotonic clock) is marked DEAD and
//     the generation ends NOW. A DEAD or LEFT member is fenced: its heartbeats are
//     answered `fenced`, its reports refused; it may register again as a joiner.
//  6. Regroup. Each member of the ending generation sends AwaitAssignment again with
//     {ended_generation, committed_step, has_state, failed, ledger}. A report of a
//     failed collective ends the generation NOW. When every member has reported (or
//     `workers.regroup_window_s` after the first report, the silent ones being taken
//     for dead), the next generation is formed (PlanGeneration): survivors in their old
//     rank order, then queued joiners, within [workers.min, workers.max] and the target
//     size; leavers are answered `exit` and become LEFT. The state source is the
//     member with the highest committed step. Below `min`, the job waits
//     `workers.min_grace_s` for joiners, then fails saying so. Old generations' keys are
//     dropped. A backend that cannot regroup (mpi) restarts instead: every member is
//     let go, and a whole new set of workers (a new mpirun) resumes from the latest
//     checkpoint, up to workers.max_restarts times; then the job fails.
//     A launcher that sees a worker process exit says so (ReportExitRequest{host,
//     pid}): that member is DEAD at once, so the window need not wait for it.
//  7. Planned changes: Register while RUNNING queues a joiner; LeaveRequest (SIGTERM)
//     marks a member LEAVING; ScaleRequest sets the target size. Each ends the
//     generation AT_BOUNDARY. After its first step in a new generation, rank 0 sends
//     GenerationReport (detect, regroup, rendezvous, sync times): an event.
//  8. Finish. Each worker sends FinishRequest{success, result}. Rank 0's result becomes
//     the job's; when no member is active any more the job is COMPLETED (FAILED if
//     any reported failure).
//  9. Checkpoints. After committing a checkpoint, rank 0 sends CheckpointCommitRequest
//     {step, path, manifest digest, signer}; the registry keeps it (ckpt/<job>/<step>)
//     and StatusResponse carries each job's latest. When no member holds state, the
//     latest is what the next generation resumes from (the ledger is cut back to it).
// 10. Observe and control. StatusRequest lists jobs and their members (shoalctl status);
//     CancelRequest moves a job to CANCELLED; EventsRequest reads the job's event log;
//     LedgerRequest reads the data ledger (shoalctl ledger --check).
//
// The server loop is single-threaded: handlers never block. Long polls are parked and
// answered later by Tick() or by the event that completes them.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "control.pb.h"
#include "coordinator/job_history.h"
#include "coordinator/kv_service.h"
#include "coordinator/lineage_book.h"
#include "coordinator/registry.h"
#include "coordinator/straggler.h"
#include "coordinator/store.h"

namespace shoal {

// Sends a response for a request that may have been parked (a long poll).
using Responder = std::function<void(Response)>;

class Coordinator {
 public:
  explicit Coordinator(std::unique_ptr<StateStore> store);
  // What the lineage records as the coordinator's code (the server sets its build's).
  void set_code(const LineageCode& code) { coordinator_code_ = code; }
  // Where OpenLineage run events go (one JSON document each; coordinator/openlineage_sink.h),
  // and the namespace their job is named in.
  void set_lineage_events(std::function<void(const std::string&)> sink, const std::string& job_namespace) {
    lineage_events_ = std::move(sink);
    lineage_namespace_ = job_namespace;
  }

  // Reloads jobs, members, generations, kv and the event counter from the store.
  Status Load(int64_t now_ms);
  // Handles one request; `respond` is called exactly once, now or later. now_ms must
  // not go backwards (the server passes a monotonic clock anchored at wall time).
  void Handle(const Request& request, int64_t now_ms, Responder respond);
  // Expires long polls, detects members whose heartbeats stopped, forms generations
  // whose regroup window passed, fails jobs left below workers.min too long.
  void Tick(int64_t now_ms);

  // For tests and shoalctl run.
  const Job* FindJob(const std::string& id) const;
  const Member* FindMember(const std::string& id) const;
  std::vector<Event> EventsOf(const std::string& job_id) const;
  // The checkpoint registry: committed checkpoints of a job, oldest first.
  std::vector<CheckpointRecord> CheckpointsOf(const std::string& job_id) const { return checkpoints_.Of(job_id); }
  Ledger LedgerOf(const std::string& job_id) const { return ledgers_.Of(job_id); }
  const LineageBook& lineage() const { return lineage_; }
  size_t kv_waiting() const { return kv_.waiting(); }
  // What the HTTP endpoint serves (observe.cc): every job (or one) with its members,
  // as a StatusRequest answers, and a job's in-memory history (null before any).
  StatusResponse Snapshot(const std::string& job_id, int64_t now_ms) const;
  const JobHistory* HistoryOf(const std::string& job_id) const;

 private:
  struct MemberRecord {
    Member member;
    Responder awaiting;  // parked AwaitAssignment, if any
    uint64_t awaiting_id = 0;
    int64_t heartbeat_saved_ms = 0;  // when a heartbeat last persisted its metrics
  };

  // Jobs (coordinator.cc).
  Status Submit(const SubmitRequest& req, int64_t now_ms, SubmitResponse* out);
  Status Cancel(const CancelRequest& req, int64_t now_ms, CancelResponse* out);
  void FillStatus(const StatusRequest& req, int64_t now_ms, StatusResponse* out) const;
  Status Finish(const FinishRequest& req, int64_t now_ms);
  Status CommitCheckpoint(const CheckpointCommitRequest& req, int64_t now_ms);
  Status GetLedger(const LedgerRequest& req, LedgerResponse* out) const;
  Status CheckKvScope(const std::string& key) const;
  void EndJob(Job& job, JobState state, const std::string& reason, int64_t now_ms);

  // Membership (members.cc).
  Status Register(const RegisterRequest& req, int64_t now_ms, RegisterResponse* out);
  void AwaitAssignment(const Request& req, int64_t now_ms, Responder respond);
  Status Heartbeat(const HeartbeatRequest& req, int64_t now_ms, HeartbeatResponse* out);
  Status Leave(const LeaveRequest& req, int64_t now_ms);
  Status Scale(const ScaleRequest& req, int64_t now_ms, ScaleResponse* out);
  Status GenerationReport(const GenerationReportRequest& req, int64_t now_ms);
  Status ReportExit(const ReportExitRequest& req, int64_t now_ms, ReportExitResponse* out);
  // A member of the job's current generation is gone for good (dead, not leaving):
  // its generation ends now (a fixed-membership job restarts instead).
  void LoseMember(MemberRecord& rec, const std::string& why, int64_t now_ms);
  void DetectDeadMembers(int64_t now_ms);
  void FormFirstGeneration(Job& job, int64_t now_ms);
  // Ends the job's current generation (a failure upgrades a pending planned change).
  void EndGeneration(Job& job, RegroupMode mode, const std::string& cause, int64_t now_ms);
  // Forms the next generation once the current one's members have all reported.
  void MaybeFormNextGeneration(Job& job, int64_t now_ms);
  void FormGeneration(Job& job, const std::vector<MemberRecord*>& members, const std::string& cause, int64_t now_ms);
  void AnswerAssignment(MemberRecord& rec);
  // A job whose backend cannot regroup (mpi) lost a member: every member is let go and
  // the job waits for a whole new set of workers, which resume from the latest
  // checkpoint; after workers.max_restarts restarts it fails instead.
  void RestartFixedJob(Job& job, const std::string& cause, int64_t now_ms);
  void MaybeFormRestartedGeneration(Job& job, int64_t now_ms);
  void MarkGone(MemberRecord& rec, MemberState state, const std::string& why, int64_t now_ms);
  std::vector<MemberRecord*> MembersOf(const std::string& job_id, MemberState state);
  // ACTIVE and LEAVING members of the job's current generation, by rank.
  std::vector<MemberRecord*> CurrentMembers(const Job& job);
  int Capacity(const Job& job) const;

  // Observability (observe.cc): a current member's heartbeat feeds the job's history
  // and the straggler windows; Tick judges stragglers once a second.
  void ObserveHeartbeat(const Job& job, const MemberRecord& rec, int64_t now_ms);
  void MarkGenerationFormed(const Job& job, int64_t start_step, const std::string& cause, int64_t now_ms);
  void CheckStragglers(int64_t now_ms);

  Status SaveJob(const Job& job);
  Status SaveMember(const Member& m);
  // An OpenLineage run event for the job, when a sink is set (coordinator.cc).
  void EmitLineageEvent(const std::string& job_id, const std::string& type, int64_t now_ms,
                        const GenerationLineage* generation, const std::vector<CheckpointLineage>& outputs,
                        const std::string& error = "");
  void AddEvent(const std::string& job_id, const std::string& kind, const std::string& detail, int64_t now_ms,
                const std::map<std::string, double>& figures = {});

  std::unique_ptr<StateStore> store_;
  KvService kv_;
  CheckpointRegistry checkpoints_;
  LedgerBook ledgers_;
  LineageBook lineage_;
  std::map<std::string, Job> jobs_;
  std::map<std::string, MemberRecord> members_;
  std::map<std::string, int> next_member_index_;  // per job
  std::map<std::string, int64_t> first_report_ms_;  // per job: the ending generation's first report
  int64_t next_event_seq_ = 1;
  LineageCode coordinator_code_;  // this binary, recorded with every job it is submitted
  std::function<void(const std::string&)> lineage_events_;
  std::string lineage_namespace_ = "shoal";
  std::map<std::string, JobHistory> histories_;  // per job, in memory only
  StragglerWindows straggler_windows_;
  int64_t next_straggler_check_ms_ = 0;
};

bool IsTerminal(JobState state);
// The store key of a job's generation n: "gen/<job>/<n in 10 digits>" (ordered by n).
std::string GenKey(const std::string& job, int64_t n);
std::string JobStateName(JobState state);
std::string MemberStateName(MemberState state);

}  // namespace shoal

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
//     kv_prefix="<job>/gen-1/"}.
//  4. Rendezvous. Workers build their communicator through KvSet/KvGet under the
//     kv_prefix (Gloo addresses; later the NCCL unique id). KvGet is a long poll
//     answered once every requested key exists, or kDeadlineExceeded at its deadline.
//  5. Train. Each worker sends HeartbeatRequest{metrics} every
//     `workers.heartbeat_interval_s`; the answer carries the job state (a worker stops
//     when it reads CANCELLED or FAILED) and the current generation (a change means
//     regroup, for elastic membership). A member silent for `heartbeat_timeout_s` is
//     marked DEAD; while membership is fixed, that fails the job.
//  6. Finish. Each worker sends FinishRequest{success, result}. Rank 0's result becomes
//     the job's; when every active member has finished the job is COMPLETED (FAILED if
//     any reported failure).
//  7. Checkpoints. After committing a checkpoint, rank 0 sends CheckpointCommitRequest
//     {step, path, manifest digest, signer}; the registry keeps it (ckpt/<job>/<step>)
//     and StatusResponse carries each job's latest.
//  8. Observe and control. StatusRequest lists jobs and their members (shoalctl status);
//     CancelRequest moves a job to CANCELLED; EventsRequest reads the job's event log.
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
#include "coordinator/kv_service.h"
#include "coordinator/store.h"

namespace shoal {

// Sends a response for a request that may have been parked (a long poll).
using Responder = std::function<void(Response)>;

class Coordinator {
 public:
  explicit Coordinator(std::unique_ptr<StateStore> store);

  // Reloads jobs, members, generations, kv and the event counter from the store.
  Status Load(int64_t now_ms);
  // Handles one request; `respond` is called exactly once, now or later.
  void Handle(const Request& request, int64_t now_ms, Responder respond);
  // Expires long polls and detects members whose heartbeats stopped.
  void Tick(int64_t now_ms);

  // For tests and shoalctl run.
  const Job* FindJob(const std::string& id) const;
  std::vector<Event> EventsOf(const std::string& job_id) const;
  // The checkpoint registry: committed checkpoints of a job, oldest first.
  std::vector<CheckpointRecord> CheckpointsOf(const std::string& job_id) const;

 private:
  struct MemberRecord {
    Member member;
    Responder awaiting;  // parked AwaitAssignment, if any
    uint64_t awaiting_id = 0;
  };

  Status Submit(const SubmitRequest& req, int64_t now_ms, SubmitResponse* out);
  Status Cancel(const CancelRequest& req, int64_t now_ms, CancelResponse* out);
  void FillStatus(const StatusRequest& req, int64_t now_ms, StatusResponse* out) const;
  Status Register(const RegisterRequest& req, int64_t now_ms, RegisterResponse* out);
  void AwaitAssignment(const Request& req, int64_t now_ms, Responder respond);
  Status Heartbeat(const HeartbeatRequest& req, int64_t now_ms, HeartbeatResponse* out);
  Status Finish(const FinishRequest& req, int64_t now_ms);
  Status CommitCheckpoint(const CheckpointRecord& rec, int64_t now_ms);

  void MaybeFormGeneration(Job& job, int64_t now_ms);
  void AnswerAssignment(MemberRecord& rec);
  void EndJob(Job& job, JobState state, const std::string& reason, int64_t now_ms);
  std::vector<MemberRecord*> MembersOf(const std::string& job_id, MemberState state);
  Status SaveJob(const Job& job);
  Status SaveMember(const Member& m);
  void AddEvent(const std::string& job_id, const std::string& kind, const std::string& detail, int64_t now_ms);

  std::unique_ptr<StateStore> store_;
  KvService kv_;
  std::map<std::string, Job> jobs_;
  std::map<std::string, MemberRecord> members_;
  std::map<std::string, int> next_member_index_;  // per job
  int64_t next_event_seq_ = 1;
};

bool IsTerminal(JobState state);
std::string JobStateName(JobState state);
std::string MemberStateName(MemberState state);

}  // namespace shoal

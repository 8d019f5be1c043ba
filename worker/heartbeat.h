// The worker's heartbeat thread: every interval it sends the latest metrics (rank 0
// adds its data ledger) and reads back the job's state and how the member's generation
// is ending. A cancelled or failed job raises stop_requested(); a failure elsewhere
// (REGROUP_NOW) or being fenced makes it abort the communicator of that generation, so
// no member waits out a collective timeout; a planned change raises boundary_pending().
// It also carries a graceful leave (SIGTERM) to the coordinator.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "control.pb.h"
#include "jobspec.pb.h"
#include "worker/trace.h"

namespace shoal {

// How long building a generation's CPU communicator (gloo, shm, auto) may take. A peer
// that dies after publishing its address but before connecting cannot be aborted out
// of Gloo's connect (the heartbeat thread has no communicator to abort yet), so the
// others would wait the whole collectives.timeout_s (60 s by default; the chaos soak
// found it). By the heartbeat timeout the coordinator has declared any silent member
// dead, so waiting a second past it loses nothing legitimate: building takes ~50 ms,
// and a spurious expiry costs one regroup. nccl keeps collectives.timeout_s: its
// initialisation is slower at scale, and the heartbeat thread can abort it.
std::chrono::milliseconds RendezvousTimeout(const JobSpec& spec, const std::string& backend);

class HeartbeatThread {
 public:
  // abort_generation(g) is called from the heartbeat thread when the communicator of
  // generation g must stop at once (the job ended, a failure, fencing); the worker
  // ignores it for any generation but the one it is in.
  HeartbeatThread(std::string endpoint, std::string member_id, double interval_s,
                  std::function<void(int64_t generation)> abort_generation);
  ~HeartbeatThread();

  void Update(const WorkerMetrics& m);
  void UpdateLedger(const Ledger& ledger);  // rank 0 only; empty: none sent
  // The member id (changes when a fenced worker registers again) and the generation it
  // trains in (0 between generations).
  void SetMember(const std::string& member_id);
  void SetGeneration(int64_t generation);
  // Asks the coordinator to let this member leave at the next boundary (once per member).
  void RequestLeave();

  bool stop_requested() const { return stop_requested_.load(); }
  JobState last_job_state() const { return last_state_.load(); }
  // A planned change is pending for the current generation.
  bool boundary_pending() const { return boundary_pending_.load(); }
  bool fenced() const { return fenced_.load(); }
  // The coordinator refused the leave (a job that cannot regroup): stop instead.
  bool leave_refused() const { return leave_refused_.load(); }

  // The coordinator's clock against this process's trace clock, from the beats so far.
  ClockOffset clock_offset() const;
  // The next `beats` beats go 20 ms apart instead of an interval apart: more samples,
  // so a short round trip among them (a tighter offset) for a timeline trace.
  void SampleClockSoon(int beats) { quick_beats_ = beats; }
  // Keeps the sample with the shortest round trip (public for tests).
  void AddClockSample(int64_t sent_us, int64_t received_us, int64_t server_us);

  // What the loop does with the answer to a beat sent for `member` in `generation`
  // (public for tests: the race it guards against is hard to time).
  void Apply(const std::string& member, int64_t generation, const HeartbeatResponse& hb);

 private:
  void Loop();

  std::string endpoint_;
  double interval_s_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  ClockOffset clock_;
  int64_t clock_rtt_us_ = -1;
  std::string member_id_;
  int64_t generation_ = 0;
  WorkerMetrics metrics_;
  Ledger ledger_;
  bool leave_wanted_ = false, leave_sent_ = false;
  bool quit_ = false;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> boundary_pending_{false};
  std::atomic<bool> fenced_{false};
  std::atomic<bool> leave_refused_{false};
  std::atomic<int> quick_beats_{0};
  std::atomic<JobState> last_state_{JOB_STATE_UNSPECIFIED};
  std::function<void(int64_t)> abort_generation_;
  std::thread thread_;
};

}  // namespace shoal

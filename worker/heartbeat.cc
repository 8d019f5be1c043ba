// Heartbeat loop. The coordinator being unreachable is not fatal: training goes on over
// the data plane and heartbeats resume when the coordinator is back (it may restart).
#include "worker/heartbeat.h"

#include <algorithm>

#include "common/log.h"
#include "coordinator/client.h"

namespace shoal {

std::chrono::milliseconds RendezvousTimeout(const JobSpec& spec, const std::string& backend) {
  const auto full = std::chrono::milliseconds(static_cast<int64_t>(spec.collectives().timeout_s() * 1000));
  if (backend == "nccl" || backend == "mpi") return full;
  const auto past_heartbeat =
      std::chrono::milliseconds(static_cast<int64_t>((spec.workers().heartbeat_timeout_s() + 1) * 1000));
  return std::min(full, std::max(past_heartbeat, std::chrono::milliseconds(2000)));
}

HeartbeatThread::HeartbeatThread(std::string endpoint, std::string member_id, double interval_s,
                                 std::function<void(int64_t)> abort_generation)
    : endpoint_(std::move(endpoint)),
      interval_s_(interval_s),
      member_id_(std::move(member_id)),
      abort_generation_(std::move(abort_generation)) {
  metrics_.set_test_accuracy(-1);
  thread_ = std::thread([this] { Loop(); });
}

HeartbeatThread::~HeartbeatThread() {
  {
    std::lock_guard<std::mutex> l(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void HeartbeatThread::Update(const WorkerMetrics& m) {
  std::lock_guard<std::mutex> l(mu_);
  metrics_ = m;
}

void HeartbeatThread::UpdateLedger(const Ledger& ledger) {
  std::lock_guard<std::mutex> l(mu_);
  ledger_ = ledger;
}

void HeartbeatThread::SetMember(const std::string& member_id) {
  std::lock_guard<std::mutex> l(mu_);
  member_id_ = member_id;
  leave_sent_ = false;
  fenced_ = false;
}

void HeartbeatThread::SetGeneration(int64_t generation) {
  std::lock_guard<std::mutex> l(mu_);
  generation_ = generation;
  boundary_pending_ = false;
  ledger_.Clear();
}

void HeartbeatThread::Apply(const std::string& member, int64_t generation, const HeartbeatResponse& hb) {
  {
    // The answer to a beat sent for an earlier member id (this process was fenced and
    // registered again while it was in flight) says nothing about the current one: its
    // "fenced" would stick and end every later generation at its first boundary (the
    // chaos soak found that loop: one step per generation for 13 s).
    std::lock_guard<std::mutex> l(mu_);
    if (member != member_id_) return;
  }
  JobState s = hb.job_state();
  last_state_ = s;
  if ((s == JOB_CANCELLED || s == JOB_FAILED) && !stop_requested_.exchange(true)) {
    SHOAL_LOG_WARN("job is {}: stopping", s == JOB_CANCELLED ? "cancelled" : "failed");
    if (abort_generation_) abort_generation_(generation);
  } else if (hb.fenced()) {
    if (!fenced_.exchange(true)) SHOAL_LOG_WARN("fenced: {}", hb.fence_reason());
    if (generation > 0 && abort_generation_) abort_generation_(generation);
  } else if (generation > 0 && hb.generation() == generation) {
    if (hb.regroup() == REGROUP_NOW) {
      if (abort_generation_) abort_generation_(generation);
    } else if (hb.regroup() == REGROUP_AT_BOUNDARY) {
      std::lock_guard<std::mutex> l(mu_);
      if (generation_ == generation) boundary_pending_ = true;
    }
  }
}

void HeartbeatThread::AddClockSample(int64_t sent_us, int64_t received_us, int64_t server_us) {
  if (server_us <= 0 || received_us < sent_us) return;  // a coordinator that does not tell its time
  // The server read its clock somewhere inside the round trip; the midpoint is the best
  // guess, wrong by at most half the round trip, so the shortest round trip wins.
  const int64_t rtt = received_us - sent_us;
  std::lock_guard<std::mutex> l(mu_);
  ++clock_.samples;
  if (clock_rtt_us_ >= 0 && rtt >= clock_rtt_us_) return;
  clock_rtt_us_ = rtt;
  clock_.offset_us = server_us - (sent_us + received_us) / 2;
  clock_.uncertainty_us = (rtt + 1) / 2;
}

ClockOffset HeartbeatThread::clock_offset() const {
  std::lock_guard<std::mutex> l(mu_);
  return clock_;
}

void HeartbeatThread::RequestLeave() {
  {
    std::lock_guard<std::mutex> l(mu_);
    leave_wanted_ = true;
  }
  cv_.notify_all();  // tell the coordinator now, not at the next beat
}

void HeartbeatThread::Loop() {
  ControlClient client(endpoint_);
  const auto call_timeout = std::chrono::milliseconds(static_cast<int64_t>(std::max(1.0, 2 * interval_s_) * 1000));
  int failures = 0;
  for (;;) {
    Request r;
    int64_t generation;
    bool send_leave;
    std::string member;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (quit_) return;
      member = member_id_;
      generation = generation_;
      send_leave = leave_wanted_ && !leave_sent_;
      r.mutable_heartbeat()->set_member_id(member);
      r.mutable_heartbeat()->set_generation(generation);
      *r.mutable_heartbeat()->mutable_metrics() = metrics_;
      if (ledger_.ranges_size() > 0) *r.mutable_heartbeat()->mutable_ledger() = ledger_;
    }
    if (send_leave) {
      Request leave;
      leave.mutable_leave()->set_member_id(member);
      auto resp = client.Call(leave, call_timeout);
      if (resp.ok()) {
        std::lock_guard<std::mutex> l(mu_);
        leave_sent_ = member == member_id_;
        SHOAL_LOG_INFO("leaving: the coordinator takes {} out at the next step boundary", member);
      } else if (resp.status().code() == StatusCode::kFailedPrecondition) {
        SHOAL_LOG_WARN("leave refused ({}): stopping", resp.status().message());
        leave_refused_ = true;
        std::lock_guard<std::mutex> l(mu_);
        leave_sent_ = true;
      } else if (resp.status().code() != StatusCode::kUnavailable) {
        SHOAL_LOG_WARN("leave: {}", resp.status().ToString());
        std::lock_guard<std::mutex> l(mu_);
        leave_sent_ = true;  // not retried: the boundary report says it again
      }
    }
    const int64_t sent_us = TraceClockMicros();
    auto resp = client.Call(r, call_timeout);
    const int64_t received_us = TraceClockMicros();
    if (resp.ok()) {
      failures = 0;
      AddClockSample(sent_us, received_us, resp->heartbeat().server_unix_us());
      Apply(member, generation, resp->heartbeat());
    } else if (++failures == 3 || failures % 20 == 0) {
      SHOAL_LOG_WARN("heartbeat: {}", resp.status().ToString());
    }
    const double wait_s = quick_beats_.load() > 0 ? std::min(interval_s_, 0.02) : interval_s_;
    if (quick_beats_.load() > 0) --quick_beats_;
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::duration<double>(wait_s), [this] { return quit_ || (leave_wanted_ && !leave_sent_); });
    if (quit_) return;
  }
}

}  // namespace shoal

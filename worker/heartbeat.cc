// Heartbeat loop. The coordinator being unreachable is not fatal: training goes on over
// the data plane and heartbeats resume when the coordinator is back (it may restart).
#include "worker/heartbeat.h"

#include "common/log.h"
#include "coordinator/client.h"

namespace shoal {

HeartbeatThread::HeartbeatThread(std::string endpoint, std::string member_id, double interval_s,
                                 std::function<void()> on_stop)
    : endpoint_(std::move(endpoint)), member_id_(std::move(member_id)), interval_s_(interval_s), on_stop_(std::move(on_stop)) {
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

void HeartbeatThread::Loop() {
  ControlClient client(endpoint_);
  int failures = 0;
  for (;;) {
    Request r;
    r.mutable_heartbeat()->set_member_id(member_id_);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (quit_) return;
      *r.mutable_heartbeat()->mutable_metrics() = metrics_;
    }
    auto resp = client.Call(r, std::chrono::milliseconds(static_cast<int64_t>(std::max(1.0, 2 * interval_s_) * 1000)));
    if (resp.ok()) {
      failures = 0;
      JobState s = resp->heartbeat().job_state();
      last_state_ = s;
      if ((s == JOB_CANCELLED || s == JOB_FAILED) && !stop_requested_.exchange(true)) {
        SHOAL_LOG_WARN("job is {}: stopping", s == JOB_CANCELLED ? "cancelled" : "failed");
        if (on_stop_) on_stop_();
      }
    } else if (++failures == 3 || failures % 20 == 0) {
      SHOAL_LOG_WARN("heartbeat: {}", resp.status().ToString());
    }
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::duration<double>(interval_s_), [this] { return quit_; });
    if (quit_) return;
  }
}

}  // namespace shoal

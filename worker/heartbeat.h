// The worker's heartbeat thread: every interval it sends the latest metrics and reads
// back the job's state. A cancelled or failed job raises stop(), and the worker aborts
// its communicator so no peer waits out a collective timeout.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "control.pb.h"

namespace shoal {

class HeartbeatThread {
 public:
  // on_stop is called once, from the heartbeat thread, when the job ends under the worker.
  HeartbeatThread(std::string endpoint, std::string member_id, double interval_s, std::function<void()> on_stop);
  ~HeartbeatThread();

  void Update(const WorkerMetrics& m);
  bool stop_requested() const { return stop_requested_.load(); }
  JobState last_job_state() const { return last_state_.load(); }

 private:
  void Loop();

  std::string endpoint_, member_id_;
  double interval_s_;
  std::mutex mu_;
  std::condition_variable cv_;
  WorkerMetrics metrics_;
  bool quit_ = false;
  std::atomic<bool> stop_requested_{false};
  std::atomic<JobState> last_state_{JOB_STATE_UNSPECIFIED};
  std::function<void()> on_stop_;
  std::thread thread_;
};

}  // namespace shoal

// Internal to the MPI backend: the per-communicator progress thread that makes the
// blocking MPI calls, and the jobs callers hand it (see MpiCommunicator's header for
// why blocking calls on a thread beat MPI_I* polling).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "common/status.h"

namespace shoal {
namespace mpi_detail {

// One collective handed to the progress thread; `done` and `result` are guarded by
// Progress::mu.
struct Job {
  std::function<Status()> body;
  bool done = false;
  Status result;
};

// The progress thread and its queue. Shared with the thread itself, so that a
// thread left blocked in MPI after a timeout keeps it alive after the communicator
// is gone.
struct Progress {
  std::mutex mu;
  std::condition_variable work_cv;  // the thread waits for jobs
  std::condition_variable done_cv;  // callers wait for their job, a deadline or Abort()
  std::deque<std::shared_ptr<Job>> queue;
  bool stop = false;
  bool busy = false;  // the thread is inside a job's body
  std::thread thread;

  static inline void Loop(std::shared_ptr<Progress> self) {
    std::unique_lock<std::mutex> lock(self->mu);
    for (;;) {
      self->work_cv.wait(lock, [&] { return self->stop || !self->queue.empty(); });
      if (self->queue.empty()) return;  // stop requested and nothing left
      auto job = std::move(self->queue.front());
      self->queue.pop_front();
      self->busy = true;
      lock.unlock();
      Status result = job->body();
      lock.lock();
      self->busy = false;
      job->done = true;
      job->result = std::move(result);
      self->done_cv.notify_all();
      if (self->stop) return;  // jobs queued behind a failure are never run
    }
  }
};

}  // namespace mpi_detail
}  // namespace shoal

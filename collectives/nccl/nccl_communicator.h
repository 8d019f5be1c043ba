// Communicator over NCCL with non-blocking communicators and a watchdog thread: every
// operation has a deadline, async errors are polled, and either one aborts the NCCL
// communicator (ncclCommAbort) so no call hangs; a new one can be built in-process.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/nccl/nccl_api.h"

namespace shoal::nccl {

struct NcclOptions {
  int rank = 0;
  int size = 1;
  KvStore* kv = nullptr;  // carries rank 0's unique id; not owned
  std::string prefix;     // job + generation scope: a new generation gets a new id
  std::chrono::milliseconds timeout{60'000};  // for building the communicator
  int device = -1;        // -1: local rank from the launcher (see ChooseLocalDevice)
  std::chrono::milliseconds poll_interval{2};  // watchdog period
};

// One bucket of a step, already on the device.
struct DeviceBucket {
  void* data = nullptr;
  size_t count = 0;
  DType dtype = DType::kF32;
};

// The key under which rank 0 publishes the unique id.
std::string UniqueIdKey(const std::string& prefix);

class NcclCommunicator : public Communicator {
 public:
  // Chooses the device, exchanges the unique id through opts.kv and builds the
  // communicator. kDeadlineExceeded (after aborting it) when the peers do not all
  // arrive within opts.timeout; the process can simply call Create again.
  static StatusOr<std::unique_ptr<NcclCommunicator>> Create(const NcclOptions& opts,
                                                           std::shared_ptr<NcclApi> api);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return opts_.rank; }
  int size() const override { return opts_.size; }
  std::string backend() const override { return "nccl"; }
  int device() const { return device_; }

  // `data` may be device or host memory (host buffers are staged through the device).
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op, const CollectiveOptions& opts) override;
  Status AllGather(const void* send, void* recv, size_t bytes_per_rank, const CollectiveOptions& opts) override;
  Status Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) override;
  Status Barrier(const CollectiveOptions& opts) override;
  void Abort() override;

  // The overlapped path for GPU training: issues all `buckets` (device memory, in
  // place) as one ncclGroupStart/End on this communicator's own stream, ordered after
  // `after` (an event the compute stream recorded once backward wrote them; null for
  // none), and returns without waiting. The watchdog enforces opts.timeout from now.
  Status EnqueueAllReduce(const std::vector<DeviceBucket>& buckets, ReduceOp op, EventHandle after,
                          const CollectiveOptions& opts);
  // Waits for everything enqueued so far (or the abort that ends it).
  Status Synchronize();
  StreamHandle stream() const { return stream_; }

  // Why the communicator was aborted; OK while healthy.
  Status abort_status() const;

 private:
  struct Pending {
    uint64_t id;
    EventHandle event;  // recorded after the op; done => op finished
    std::chrono::steady_clock::time_point deadline;
    std::string what;
  };

  NcclCommunicator(const NcclOptions& opts, std::shared_ptr<NcclApi> api);
  Status Init();
  void WatchdogLoop();
  void AbortLocked(Status reason);
  // Polls CommGetAsyncError until the communicator has taken all queued calls.
  Status WaitReady(std::chrono::steady_clock::time_point deadline, const std::string& what);
  // Issues `group` (NCCL calls on stream_) inside ncclGroupStart/End after `after`,
  // records an event and registers it with the watchdog; returns the pending id.
  StatusOr<uint64_t> Issue(const std::string& what, std::chrono::milliseconds timeout, EventHandle after,
                           const std::function<Status()>& group);
  Status Wait(uint64_t id);
  // Device scratch for host buffers, grown on demand.
  StatusOr<void*> Scratch(size_t bytes);
  Status RunStaged(const std::string& what, void* host_or_device, size_t bytes, bool copy_in,
                   const CollectiveOptions& opts, const std::function<Status(void*)>& issue);

  const NcclOptions opts_;
  std::shared_ptr<NcclApi> api_;
  int device_ = -1;
  StreamHandle stream_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;

  mutable std::mutex mu_;  // guards everything below; every NCCL call on comm_ holds it
  std::condition_variable cv_;
  CommHandle comm_ = nullptr;
  bool aborted_ = false;
  Status abort_status_;
  std::deque<Pending> pending_;
  std::vector<EventHandle> free_events_;
  uint64_t next_id_ = 1;
  bool quit_ = false;
  std::thread watchdog_;
};

// Factory entry: NcclOptions from the generic config, real NCCL underneath.
StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const NcclOptions& opts);
// True when this process can see at least one CUDA device.
bool NcclUsable();

}  // namespace shoal::nccl

// Communicator over MPI (a duplicate of MPI_COMM_WORLD), for jobs launched with
// mpirun/srun. Blocking MPI collectives run on a per-communicator progress thread
// (MPI_THREAD_MULTIPLE) while the caller waits against the deadline and Abort().
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "collectives/bandwidth.h"
#include "collectives/communicator.h"
#include "collectives/failure_latch.h"

namespace shoal {

// Calls MPI_Init_thread (asking for MPI_THREAD_MULTIPLE) unless MPI is already
// initialised, requires at least MPI_THREAD_SERIALIZED, and logs the level provided.
StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator(
    const std::optional<LinkEmulation>& emulation = std::nullopt);  // unset: the environment
// MPI_Finalize if MPI is initialised and not yet finalised. Call once at exit,
// after every MpiCommunicator is destroyed.
void FinalizeMpiIfInitialized();
// The thread level MPI provided ("MPI_THREAD_MULTIPLE", ...), "uninitialized" before.
std::string MpiThreadLevel();

// Why a progress thread: Open MPI's non-blocking collectives (libnbc) polled with
// MPI_Test ran 3x slower than the blocking, tuned ones (MPI_Allreduce), and a
// blocking call cannot be interrupted. So with MPI_THREAD_MULTIPLE each call is
// handed to one thread per communicator that makes the blocking call, while the
// caller waits on a condition variable until it finishes, the deadline passes or
// Abort() is called. One thread keeps MPI's issue order equal to the call order.
// Below MPI_THREAD_MULTIPLE the old path is used: MPI_I* requests on scratch memory
// polled with MPI_Test under a process-wide lock.
//
// Failure model: MPI cannot cancel a collective once issued. On a timeout or Abort()
// the caller gets kDeadlineExceeded / kAborted and every later call returns kAborted:
// tear the communicator down and build another. The progress thread stays blocked in
// MPI until the other ranks complete the collective (or the process exits).
// f32 AllReduce, AllGather, AllToAll and Broadcast hand the CALLER'S buffers to MPI (no scratch
// copy: copying in and out would cost more than the 2% the backend may add), so after
// a timeout or abort the caller's buffer may still be written by MPI until the
// communicator is torn down: keep the buffer alive until then (declare it before the
// communicator). The destructor waits up to 10 s for such a collective to complete;
// past that it detaches the thread, leaks the MPI communicator rather than free it
// under a running collective, and logs a warning (the buffer is then unsafe to free
// until the process exits). 16-bit allreduce works on an f32 copy the job owns.
//
// Ordering: MPI matches collectives on a communicator by issue order and ignores
// CollectiveOptions::tag, so callers issuing from several threads must issue in the
// same order on every rank.
class MpiCommunicator : public Communicator {
 public:
  struct State;  // MPI handles, kept out of this header so users need not see mpi.h

  explicit MpiCommunicator(std::unique_ptr<State> state);
  ~MpiCommunicator() override;

  int rank() const override;
  int size() const override;
  std::string backend() const override { return "mpi"; }

  // Summed in f32 by MPI (bf16/f16 converted to f32 and back; average divides the f32
  // sum before converting, so there is one rounding to the 16-bit dtype): blocking
  // MPI_Allreduce on the progress thread under MPI_THREAD_MULTIPLE, else MPI_Iallreduce
  // polled with MPI_Test.
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op,
                   const CollectiveOptions& opts) override;
  Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                   const CollectiveOptions& opts) override;
  // MPI_Alltoall; wire bytes counted as (n-1) blocks each way.
  Status AllToAll(const void* send, void* recv, size_t bytes_per_rank,
                  const CollectiveOptions& opts) override;
  Status Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) override;
  Status Barrier(const CollectiveOptions& opts) override;
  void Abort() override;
  // Bandwidth emulation (bandwidth.h); MakeMpiCommunicator applies it.
  void SetLinkEmulation(const LinkEmulation& emulation);

 private:
  // Polls the request `start` issues (it gets an MPI_Request*) until it completes,
  // the deadline passes or Abort() is called. `scratch` is what MPI reads or
  // writes; it is kept alive if the request has to be abandoned.
  Status Complete(const char* name, const CollectiveOptions& opts,
                  std::chrono::steady_clock::time_point deadline,
                  const std::function<Status(void* request)>& start,
                  std::shared_ptr<void> scratch);
  // Runs `body` (blocking MPI calls, returns a Status) on the progress thread and
  // waits until it is done, the deadline passes or Abort() is called.
  Status RunBlocking(const char* name, const CollectiveOptions& opts,
                     std::chrono::steady_clock::time_point deadline,
                     std::function<Status()> body);
  bool UseProgressThread() const;
  // The MPI_I* + MPI_Test paths used below MPI_THREAD_MULTIPLE.
  Status AllGatherPolled(const void* send, void* recv, size_t bytes_per_rank,
                         const CollectiveOptions& opts,
                         std::chrono::steady_clock::time_point deadline);
  Status BroadcastPolled(void* data, size_t bytes, int root, const CollectiveOptions& opts,
                         std::chrono::steady_clock::time_point deadline);
  Status Usable(const char* name, const CollectiveOptions& opts);
  Status MarkBroken(Status status);
  // Emulated links (bandwidth.h, from the environment at creation). MPI does not show
  // its messages, so the calling thread serves the delay before each collective, for
  // `messages` messages of `bytes_each` under the same model as the byte counters
  // (ring allreduce: 2(n-1) blocks of 1/n of the buffer; allgather and all-to-all: n-1
  // blocks; broadcast: the buffer once from every rank but the chain's last). The
  // delay comes before the collective's timeout starts.
  void Throttle(int64_t messages, size_t bytes_each);

  std::unique_ptr<State> state_;
  FailureLatch latch_;
  std::unique_ptr<TokenBucket> throttle_;  // null unless links are emulated
};

}  // namespace shoal

// Communicator over MPI (a duplicate of MPI_COMM_WORLD), for jobs launched with
// mpirun/srun. Non-blocking collectives polled against the deadline and Abort(),
// since a blocking MPI collective cannot be interrupted.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "collectives/communicator.h"

namespace shoal {

// Calls MPI_Init_thread (asking for MPI_THREAD_MULTIPLE) unless MPI is already
// initialised, requires at least MPI_THREAD_SERIALIZED, and logs the level provided.
StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator();
// MPI_Finalize if MPI is initialised and not yet finalised. Call once at exit,
// after every MpiCommunicator is destroyed.
void FinalizeMpiIfInitialized();
// The thread level MPI provided ("MPI_THREAD_MULTIPLE", ...), "uninitialized" before.
std::string MpiThreadLevel();

// Failure model: MPI cannot cancel a collective once issued. On a timeout or Abort()
// the request is abandoned together with the communicator-owned scratch memory it
// uses (the caller's buffers are never handed to MPI, so returning is safe), and
// every later call returns kAborted: tear the communicator down and build another.
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

  // MPI_Iallreduce in f32 (bf16/f16 converted to f32 and back; average divides the
  // f32 sum before converting, so there is one rounding to the 16-bit dtype).
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op,
                   const CollectiveOptions& opts) override;
  Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                   const CollectiveOptions& opts) override;
  Status Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) override;
  Status Barrier(const CollectiveOptions& opts) override;
  void Abort() override;

 private:
  // Polls the request `start` issues (it gets an MPI_Request*) until it completes,
  // the deadline passes or Abort() is called. `scratch` is what MPI reads or
  // writes; it is kept alive if the request has to be abandoned.
  Status Complete(const char* name, const CollectiveOptions& opts,
                  std::chrono::steady_clock::time_point deadline,
                  const std::function<Status(void* request)>& start,
                  std::shared_ptr<void> scratch);
  Status Usable(const char* name, const CollectiveOptions& opts);
  Status MarkBroken(Status status);

  std::unique_ptr<State> state_;
  std::atomic<bool> aborted_{false};
  std::mutex mu_;       // guards broken_
  std::string broken_;  // why the communicator is unusable; empty while usable
};

}  // namespace shoal

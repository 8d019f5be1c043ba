// Communicator for ranks on one host over POSIX shared memory: no sockets, no
// progress threads. Each rank owns a slot in one segment per generation; collectives
// copy into the slots and synchronise with per-rank step counters and a futex.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "collectives/communicator.h"
#include "collectives/failure_latch.h"

namespace shoal {
namespace shm {
class Segment;
struct OpDesc;
}  // namespace shm

struct ShmOptions {
  // Per rank: two halves used alternately, so a collective moves up to half of it
  // per round. 0 = kDefaultSlotBytes, or SHOAL_SHM_SLOT_KIB from the environment.
  size_t slot_bytes = 0;
  // How long a waiter spins before it parks on the futex; negative = chosen from the
  // cores this process may use (SHOAL_SHM_SPIN_US overrides).
  int spin_us = -1;
  // Then how long it calls sched_yield() between looks before it parks; negative =
  // SHOAL_SHM_YIELD_US or 0.
  int yield_us = -1;
};

// Rendezvous through `kv` under `prefix` (unique per job generation and host): rank
// 0 creates the segment and publishes its name at `prefix` + "/shm/segment"; the
// others map it. The last rank to map it unlinks the name, so from then on nothing
// is left in /dev/shm whatever happens to the processes; on a failed set-up every
// rank that got the name unlinks it. Left behind only if the creator dies between
// creating and publishing it (microseconds). kDeadlineExceeded if some rank does not
// attach within `timeout`. Every rank must run on the same host (share /dev/shm).
// Peer liveness uses pids, so ranks must also share a pid namespace (or run as
// threads of one process).
StatusOr<std::unique_ptr<Communicator>> MakeShmCommunicator(int rank, int size, KvStore* kv,
                                                            const std::string& prefix,
                                                            std::chrono::milliseconds timeout,
                                                            const ShmOptions& options = {});

// Failure model (as Gloo's): a timeout, a peer that died (its pid is watched through
// a pidfd) or was destroyed before finishing the call, a peer that failed or was
// aborted, or calls that do not match across ranks make the communicator unusable,
// and it marks itself failed for its peers (they fail within milliseconds instead of
// at their deadline); later calls return kAborted. Build a new one under a fresh
// prefix. Abort() is safe from any thread and wakes a waiting call at once. A call
// every rank had already arrived at the last step of completes even if a peer is
// aborted afterwards.
// Calls are matched by issue order (concurrent_tags() is false, as MPI): calls from
// several threads run one at a time; each call checks that every peer is making the
// same call (kind, tag, count, dtype, op, root) and fails naming the first that is not.
//
// Byte counters count the shared-memory traffic of this rank: `sent` what it writes
// into the segment, `received` what it reads there that other ranks wrote.
class ShmCommunicator : public Communicator {
 public:
  ~ShmCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "shm"; }

  // Up to OneShotLimit(): every rank copies its buffer into its slot and, after one
  // synchronisation, sums all of them itself (in rank order, so bit-identical); sent =
  // the buffer, received = (n-1) * the buffer. Larger, per round of up to half a
  // slot: every rank copies its buffer, except the slice it owns, into its slot;
  // then rank r sums slice r of every slot in rank order
  // (16-bit in f32, rounded once), writes it to its slot and its own buffer; then
  // every rank copies the other slices from their owners' slots. Two synchronisations
  // per round; all ranks end with bit-identical results. sent = the buffer's bytes;
  // received = (n-1) * slice + (buffer - slice).
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op,
                   const CollectiveOptions& opts) override;
  // sent = bytes_per_rank, received = (n-1) * bytes_per_rank.
  Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                   const CollectiveOptions& opts) override;
  // (n-1) * bytes_per_rank each way.
  Status AllToAll(const void* send, void* recv, size_t bytes_per_rank,
                  const CollectiveOptions& opts) override;
  // The root writes, the others read: root sent = bytes, others received = bytes.
  Status Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) override;
  Status Barrier(const CollectiveOptions& opts) override;
  void Abort() override;

  static constexpr size_t kDefaultSlotBytes = 4 << 20;
  // One synchronisation instead of two is worth every rank summing the whole buffer
  // up to here (the step's control values, small buckets). Not beyond: with two ranks
  // the example's 0.94 MB gradient took 0.20-0.23 ms this way against 0.10-0.12 ms
  // sliced (each rank then sums half, on its own core).
  static constexpr size_t kOneShotMaxBytes = 8 << 10;
  static size_t OneShotLimit(int /*size*/, size_t half_bytes) { return std::min(kOneShotMaxBytes, half_bytes); }

 private:
  friend StatusOr<std::unique_ptr<Communicator>> MakeShmCommunicator(
      int rank, int size, KvStore* kv, const std::string& prefix,
      std::chrono::milliseconds timeout, const ShmOptions& options);
  class Op;

  ShmCommunicator(int rank, int size, std::unique_ptr<shm::Segment> segment, int spin_us, int yield_us);

  template <typename Body>
  Status Run(const char* name, uint8_t kind, const CollectiveOptions& opts, const shm::OpDesc& desc,
             Body&& body);
  // Bumps this rank's step counter and wakes parked peers.
  void Arrive();
  // Waits until every peer has arrived at the current step, checking the deadline,
  // Abort(), and whether a peer that has not finished the call died or closed.
  // Every round of every call ends with one: that is what makes reusing a slot half
  // two rounds later safe (a rank arrives only after it has read what it needed).
  Status Wait(Op& op);
  // After the operation's first Wait: each peer's descriptor must match.
  Status CheckPeers(Op& op);
  Status Fail(Status status);  // records the failure, marks this rank failed for its peers
  void Close(bool failed);

  Status ReduceRound(Op& op, char* data, size_t count, DType dtype, ReduceOp reduce);
  Status ReduceOneShot(Op& op, char* data, size_t count, DType dtype, ReduceOp reduce);

  const int rank_;
  const int size_;
  const std::unique_ptr<shm::Segment> seg_;  // null when size_ == 1
  const int spin_us_;
  const int yield_us_;
  FailureLatch latch_;
  std::timed_mutex call_mu_;  // one collective at a time; guards the members below
  uint32_t step_ = 0;         // the step this rank last arrived at (same on every rank)
  uint32_t ops_ = 0;          // operations issued (same on every rank)
  uint32_t rounds_ = 0;       // data rounds: round k uses slot half k & 1
};

}  // namespace shoal

// Communicator over Gloo's TCP transport. The collectives are our own ring/chain
// algorithms on Gloo unbound buffers, so that byte counts, per-operation deadlines
// and Abort() are ours to control; Gloo provides connections and message matching.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "collectives/bandwidth.h"
#include "collectives/communicator.h"
#include "collectives/failure_latch.h"

namespace gloo {
class Context;
namespace transport {
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo

namespace shoal {

// Rendezvous through `kv` under `prefix` (unique per job generation) and connect a
// full mesh. `interface_or_host` is a network interface name (e.g. "eth0") if one
// exists by that name, else a hostname or address to bind to. Returns only after
// every rank has connected (a barrier ends the set-up). Returns
// kDeadlineExceeded if some rank does not publish its address within `timeout`; in
// the worst case (a peer publishes and then dies before connecting) it returns
// after about twice `timeout`.
StatusOr<std::unique_ptr<Communicator>> MakeGlooCommunicator(
    int rank, int size, KvStore* kv, const std::string& prefix, std::chrono::milliseconds timeout,
    const std::string& interface_or_host = "127.0.0.1",
    const std::optional<LinkEmulation>& emulation = std::nullopt);  // unset: the environment

// Failure model: a timeout or transport error makes Gloo close every connection of
// the context (its reaction to an application timeout), so after any failed call
// the communicator is unusable and later calls return kAborted; build a new one
// with a fresh prefix. On failure, the contents of the caller's buffers are
// unspecified. Nothing throws out of this class.
class GlooCommunicator : public Communicator {
 public:
  explicit GlooCommunicator(std::shared_ptr<gloo::Context> context);
  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "gloo"; }

  // Two ranks and at most kPairExchangeMaxBytes: one exchange of the whole buffer,
  // both ranks adding the same two operands. Otherwise:
  // ring reduce-scatter then ring allgather, pipelined: chunks travel in segments of
  // kRingSegmentBytes (env SHOAL_GLOO_RING_SEGMENT_KIB overrides, for tuning), each
  // forwarded as soon as it is summed; f32 is summed straight into `data`.
  // The count is split into size() chunks
  // (sizes differ by at most one element), so each rank sends
  // 2 * (bytes - its two skipped chunks), i.e. 2*(n-1)/n of the buffer when the
  // count divides evenly. 16-bit dtypes travel as 16-bit and are summed in f32:
  // the n-2 forwarded partial sums and the result are each rounded to the wire
  // dtype once, so |error| <= (n-1) * u * sum_r |x_r| (u = 2^-8 bf16, 2^-11 f16);
  // relative to the result itself it can be larger under cancellation (measured:
  // 0.54% of sum|x| but 4.7% of |sum| for bf16 at n = 4). f32 is summed in f32.
  // All ranks end with bit-identical results.
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op,
                   const CollectiveOptions& opts) override;
  // Ring: each rank sends and receives (n-1) * bytes_per_rank.
  Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                   const CollectiveOptions& opts) override;
  // Every block straight to its rank, all posted at once: (n-1) * bytes_per_rank
  // each way.
  Status AllToAll(const void* send, void* recv, size_t bytes_per_rank,
                  const CollectiveOptions& opts) override;
  // Small buffers: the root sends to every rank. From kChainThreshold bytes on (and
  // n > 2): a chain root -> root+1 -> ... in kChainSegment pieces, so the root's
  // link carries the data once instead of n-1 times.
  Status Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) override;
  // Dissemination barrier: ceil(log2 n) rounds of one-byte messages.
  Status Barrier(const CollectiveOptions& opts) override;
  void Abort() override;
  // Every message's slot carries the call's tag and its per-tag sequence number.
  bool concurrent_tags() const override { return true; }

  // The connected Gloo context, for benchmarks that run gloo::allreduce on the same
  // connections. Do not use it concurrently with this object's collectives on the
  // same tag: our slots use prefixes 0x80-0x84, Gloo's algorithms use 0x01-0x08.
  gloo::Context* raw_context() { return context_.get(); }
  // The same, in the form gloo::AllreduceOptions takes.
  std::shared_ptr<gloo::Context> shared_context() { return context_; }

  // Bandwidth emulation (bandwidth.h); MakeGlooCommunicator applies it.
  // Call before the communicator is shared between threads.
  void SetLinkEmulation(const LinkEmulation& emulation);

  // Ring pipelining, chosen by measurement (2 ranks over loopback, interleaved
  // against gloo::allreduce ring on the same context, 16 and 64 MiB): 256 KiB
  // segments cost 1.45x raw and 512 KiB 1.1-1.2x (each message waits for its
  // receiver's "ready"), 1 MiB ~1.0x; a window of 3 messages in flight beat 2 at
  // 16 MiB (0.87-1.05x vs 1.03-1.10x) and tied at 64 MiB.
  static constexpr size_t kRingSegmentBytes = 1 << 20;
  // Messages in flight each way in the ring (env SHOAL_GLOO_RING_WINDOW, 2..16).
  static constexpr size_t kRingWindow = 3;
  // Two ranks and at most this many bytes: one exchange of the whole buffer instead of
  // the ring's two rounds (same bytes on the wire; each round on a busy machine costs
  // thread wake-ups). Larger buffers keep the ring, which sums each half only once.
  static constexpr size_t kPairExchangeMaxBytes = 4 << 20;
  static constexpr size_t kChainThreshold = 1 << 20;
  static constexpr size_t kChainSegment = 256 << 10;

 private:
  friend StatusOr<std::unique_ptr<Communicator>> MakeGlooCommunicator(
      int rank, int size, KvStore* kv, const std::string& prefix,
      std::chrono::milliseconds timeout, const std::string& interface_or_host,
      const std::optional<LinkEmulation>& emulation);

  class Op;
  class Buffer;

  // Checks for abort/earlier failure, runs `body` and turns any exception into a
  // Status (gloo throws IoException and EnforceNotMet).
  template <typename Body>
  Status Run(const char* name, uint8_t kind, const CollectiveOptions& opts, Body&& body);
  Status AllReduceRing(Op& op, void* data, size_t count, DType dtype, ReduceOp reduce);
  Status AllReducePair(Op& op, void* data, size_t count, DType dtype, ReduceOp reduce);
  Status BroadcastStar(Op& op, void* data, size_t bytes, int root);
  Status BroadcastChain(Op& op, void* data, size_t bytes, int root);

  // Barrier run by the factory before handing the communicator out: connectFullMesh
  // can return on one rank before a peer finished its side of the handshake, and a
  // rank closing its communicator at once would then fail that peer's rendezvous.
  Status Handshake(std::chrono::milliseconds timeout);
  Status Usable(const char* name);
  Status MarkBroken(Status status);
  uint32_t NextSequence(uint32_t tag);
  void Track(gloo::transport::UnboundBuffer* buf);
  void Untrack(gloo::transport::UnboundBuffer* buf);

  std::shared_ptr<gloo::Context> context_;
  std::unique_ptr<TokenBucket> throttle_;  // null unless links are emulated
  size_t ring_segment_bytes_ = kRingSegmentBytes;
  size_t ring_window_ = kRingWindow;
  const int rank_;
  const int size_;
  FailureLatch latch_;

  std::mutex mu_;  // guards the members below
  // Buffers with operations posted, so Abort() can wake their waits.
  std::set<gloo::transport::UnboundBuffer*> inflight_;
  // Per-tag operation counter: every rank issues the ops of one tag in the same
  // order, so (tag, sequence) names the same operation everywhere.
  std::unordered_map<uint32_t, uint32_t> sequence_;
};

}  // namespace shoal

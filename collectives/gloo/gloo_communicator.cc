// GlooCommunicator: ring allreduce/allgather, star or chain broadcast and a
// dissemination barrier over Gloo unbound buffers, each wait bounded by what is
// left of the operation's deadline and interruptible by Abort().
#include "collectives/gloo/gloo_communicator.h"

#include <net/if.h>
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include "collectives/bandwidth.h"
#include "collectives/dtype.h"
#include "collectives/gloo/gloo_op.h"
#include "collectives/gloo/kv_store_adapter.h"

namespace shoal {
namespace {
// Gloo writes to its sockets with writev, which raises SIGPIPE once a peer has gone: by
// default that kills the whole process instead of failing the collective. A handler the
// embedding program installed itself is left alone.
void IgnoreSigpipeUnlessHandled() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old {};
    if (::sigaction(SIGPIPE, nullptr, &old) == 0 && !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL)
      ::signal(SIGPIPE, SIG_IGN);
  });
}

// Slot prefixes (top byte of the 64-bit slot) above Gloo's own 0x01-0x08, so a
// benchmark running gloo::allreduce on raw_context() cannot match our messages.
constexpr uint8_t kAllReduceKind = 0x80;
constexpr uint8_t kAllGatherKind = 0x81;
constexpr uint8_t kBroadcastKind = 0x82;
constexpr uint8_t kBarrierKind = 0x83;
constexpr uint8_t kAllToAllKind = 0x84;
// Tag of the barrier that ends MakeGlooCommunicator, apart from callers' tags.
constexpr uint32_t kSetupTag = 0xFFFFFFFFu;

}  // namespace

using gloo_detail::Clock;
using gloo_detail::Mod;

GlooCommunicator::GlooCommunicator(std::shared_ptr<gloo::Context> context)
    : context_(std::move(context)), rank_(context_->rank), size_(context_->size) {
  // Tuning knob for measurements (bench/allreduce_bench), not part of the spec.
  if (const char* kib = std::getenv("SHOAL_GLOO_RING_SEGMENT_KIB")) {
    const long v = std::strtol(kib, nullptr, 10);
    if (v > 0) ring_segment_bytes_ = static_cast<size_t>(v) << 10;
  }
  if (const char* w = std::getenv("SHOAL_GLOO_RING_WINDOW")) {
    const long v = std::strtol(w, nullptr, 10);
    if (v >= 2 && v <= 16) ring_window_ = static_cast<size_t>(v);
  }
}

void GlooCommunicator::SetLinkEmulation(const LinkEmulation& emulation) {
  throttle_ = emulation.enabled() ? std::make_unique<TokenBucket>(emulation) : nullptr;
}

GlooCommunicator::~GlooCommunicator() {
  try {
    context_.reset();  // closes the pairs; peers still waiting on us see a closed connection
  } catch (...) {
  }
}

template <typename Body>
Status GlooCommunicator::Run(const char* name, uint8_t kind, const CollectiveOptions& opts,
                             Body&& body) {
  // Checked before anything is posted: a zero wait would make Gloo close every pair.
  if (opts.timeout.count() <= 0) {
    return InvalidArgument(fmt::format("{}(tag={}): timeout must be positive", name, opts.tag));
  }
  RETURN_IF_ERROR(Usable(name));
  try {
    Op op(this, name, kind, opts);
    return body(op);
  } catch (const gloo::IoException& e) {
    return MarkBroken(
        Aborted(fmt::format("{}(tag={}): gloo I/O error: {}", name, opts.tag, e.what())));
  } catch (const gloo::EnforceNotMet& e) {
    return MarkBroken(
        Internal(fmt::format("{}(tag={}): gloo check failed: {}", name, opts.tag, e.what())));
  } catch (const std::exception& e) {
    return MarkBroken(Internal(fmt::format("{}(tag={}): {}", name, opts.tag, e.what())));
  } catch (...) {
    return MarkBroken(Internal(fmt::format("{}(tag={}): unknown exception", name, opts.tag)));
  }
}

Status GlooCommunicator::AllReduce(void* data, size_t count, DType dtype, ReduceOp reduce,
                                   const CollectiveOptions& opts) {
  if (DTypeSize(dtype) == 0) return InvalidArgument("AllReduce: unknown dtype");
  if (count > 0 && data == nullptr) return InvalidArgument("AllReduce: data is null");
  return Run("AllReduce", kAllReduceKind, opts, [&](Op& op) -> Status {
    // Nothing to exchange; the average over one rank is the value itself.
    if (count == 0 || size_ == 1) return OkStatus();
    if (size_ == 2 && count * DTypeSize(dtype) <= kPairExchangeMaxBytes) {
      return AllReducePair(op, data, count, dtype, reduce);
    }
    return AllReduceRing(op, data, count, dtype, reduce);
  });
}

Status GlooCommunicator::AllGather(const void* send, void* recv, size_t bytes_per_rank,
                                   const CollectiveOptions& opts) {
  if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
    return InvalidArgument("AllGather: null buffer");
  }
  return Run("AllGather", kAllGatherKind, opts, [&](Op& op) -> Status {
    if (bytes_per_rank == 0) return OkStatus();
    auto* out = static_cast<char*>(recv);
    // memmove: the caller may pass its slot of `recv` as `send`.
    std::memmove(out + rank_ * bytes_per_rank, send, bytes_per_rank);
    if (size_ == 1) return OkStatus();
    const int next = Mod(rank_ + 1, size_), prev = Mod(rank_ - 1, size_);
    Buffer sendbuf(this, out, size_ * bytes_per_rank);
    Buffer recvbuf(this, out, size_ * bytes_per_rank);
    // At step s rank r forwards block r-s (its own first) and receives block r-s-1.
    for (int s = 0; s < size_ - 1; ++s) {
      const size_t out_block = Mod(rank_ - s, size_), in_block = Mod(rank_ - s - 1, size_);
      RETURN_IF_ERROR(op.Exchange(sendbuf, next, out_block * bytes_per_rank, bytes_per_rank,
                                  recvbuf, prev, in_block * bytes_per_rank, bytes_per_rank));
    }
    return OkStatus();
  });
}

Status GlooCommunicator::AllToAll(const void* send, void* recv, size_t bytes_per_rank,
                                  const CollectiveOptions& opts) {
  if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
    return InvalidArgument("AllToAll: null buffer");
  }
  return Run("AllToAll", kAllToAllKind, opts, [&](Op& op) -> Status {
    if (bytes_per_rank == 0) return OkStatus();
    const size_t total = size_ * bytes_per_rank;
    auto* out = static_cast<char*>(recv);
    std::memcpy(out + rank_ * bytes_per_rank, static_cast<const char*>(send) + rank_ * bytes_per_rank,
                bytes_per_rank);
    if (size_ == 1) return OkStatus();
    // Gloo only reads from a send buffer.
    Buffer sendbuf(this, const_cast<void*>(send), total);
    Buffer recvbuf(this, out, total);
    // Step j pairs rank r with r + j (to) and r - j (from), so at every step each rank
    // sends to one rank and receives from another, and no link is idle.
    for (int j = 1; j < size_; ++j) op.PostRecv(recvbuf, Mod(rank_ - j, size_), Mod(rank_ - j, size_) * bytes_per_rank, bytes_per_rank);
    for (int j = 1; j < size_; ++j) op.PostSend(sendbuf, Mod(rank_ + j, size_), Mod(rank_ + j, size_) * bytes_per_rank, bytes_per_rank);
    // Completions come in any order and every block has the same size, so the peer a
    // wait names in an error is a best guess.
    for (int j = 1; j < size_; ++j) RETURN_IF_ERROR(op.WaitRecv(recvbuf, Mod(rank_ - j, size_), bytes_per_rank));
    for (int j = 1; j < size_; ++j) RETURN_IF_ERROR(op.WaitSend(sendbuf, Mod(rank_ + j, size_), bytes_per_rank));
    return OkStatus();
  });
}

Status GlooCommunicator::Broadcast(void* data, size_t bytes, int root,
                                   const CollectiveOptions& opts) {
  if (root < 0 || root >= size_) {
    return InvalidArgument(fmt::format("Broadcast: root {} outside [0, {})", root, size_));
  }
  if (bytes > 0 && data == nullptr) return InvalidArgument("Broadcast: data is null");
  return Run("Broadcast", kBroadcastKind, opts, [&](Op& op) -> Status {
    if (bytes == 0 || size_ == 1) return OkStatus();
    if (bytes >= kChainThreshold && size_ > 2) return BroadcastChain(op, data, bytes, root);
    return BroadcastStar(op, data, bytes, root);
  });
}

Status GlooCommunicator::BroadcastStar(Op& op, void* data, size_t bytes, int root) {
  Buffer buf(this, data, bytes);
  if (rank_ != root) {
    op.PostRecv(buf, root, 0, bytes);
    return op.WaitRecv(buf, root, bytes);
  }
  for (int p = 0; p < size_; ++p) {
    if (p != root) op.PostSend(buf, p, 0, bytes);
  }
  // Completions arrive in any order; each wait consumes one. The peer named in an
  // error is the first one still counted as pending, a best guess.
  for (int p = 0; p < size_; ++p) {
    if (p != root) RETURN_IF_ERROR(op.WaitSend(buf, p, bytes));
  }
  return OkStatus();
}

Status GlooCommunicator::BroadcastChain(Op& op, void* data, size_t bytes, int root) {
  const int pos = Mod(rank_ - root, size_);
  const int next = Mod(rank_ + 1, size_), prev = Mod(rank_ - 1, size_);
  const bool forwards = pos < size_ - 1;
  const size_t segments = (bytes + kChainSegment - 1) / kChainSegment;
  auto offset = [](size_t k) { return k * kChainSegment; };
  auto length = [&](size_t k) { return std::min(kChainSegment, bytes - k * kChainSegment); };

  Buffer sendbuf(this, data, bytes);
  if (pos == 0) {
    for (size_t k = 0; k < segments; ++k) op.PostSend(sendbuf, next, offset(k), length(k));
    for (size_t k = 0; k < segments; ++k) RETURN_IF_ERROR(op.WaitSend(sendbuf, next, length(k)));
    return OkStatus();
  }
  // Two receives stay posted so the next segment is already flowing while this one
  // is forwarded (Gloo's TCP sender waits for the receiver's "ready" before sending).
  Buffer recvbuf(this, data, bytes);
  constexpr size_t kWindow = 2;
  size_t posted = 0;
  for (; posted < std::min(kWindow, segments); ++posted) {
    op.PostRecv(recvbuf, prev, offset(posted), length(posted));
  }
  for (size_t k = 0; k < segments; ++k) {
    // Receives on one pair and slot complete in posting order.
    RETURN_IF_ERROR(op.WaitRecv(recvbuf, prev, length(k)));
    if (posted < segments) {
      op.PostRecv(recvbuf, prev, offset(posted), length(posted));
      ++posted;
    }
    if (forwards) op.PostSend(sendbuf, next, offset(k), length(k));
  }
  if (forwards) {
    for (size_t k = 0; k < segments; ++k) RETURN_IF_ERROR(op.WaitSend(sendbuf, next, length(k)));
  }
  return OkStatus();
}

Status GlooCommunicator::Barrier(const CollectiveOptions& opts) {
  return Run("Barrier", kBarrierKind, opts, [&](Op& op) -> Status {
    if (size_ == 1) return OkStatus();
    // Round i: tell rank r+2^i we arrived, hear from rank r-2^i. After ceil(log2 n)
    // rounds every rank has (transitively) heard from all others.
    char token = 1;
    std::vector<char> inbox(32);
    Buffer sendbuf(this, &token, 1);
    Buffer recvbuf(this, inbox.data(), inbox.size());
    for (int k = 1, round = 0; k < size_; k <<= 1, ++round) {
      RETURN_IF_ERROR(op.Exchange(sendbuf, Mod(rank_ + k, size_), 0, 1, recvbuf,
                                  Mod(rank_ - k, size_), round, 1));
    }
    return OkStatus();
  });
}

Status GlooCommunicator::Handshake(std::chrono::milliseconds timeout) {
  CollectiveOptions opts;
  opts.timeout = timeout;
  opts.tag = kSetupTag;
  RETURN_IF_ERROR(Barrier(opts));
  // The counters describe the caller's collectives, not connection set-up.
  counters_.sent = 0;
  counters_.received = 0;
  return OkStatus();
}

void GlooCommunicator::Abort() {
  latch_.Abort();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto* buf : inflight_) {
    try {
      // Sticky flags: a wait that starts after this returns false at once.
      buf->abortWaitSend();
      buf->abortWaitRecv();
    } catch (...) {
    }
  }
}

Status GlooCommunicator::Usable(const char* name) { return latch_.Check(name); }

Status GlooCommunicator::MarkBroken(Status status) { return latch_.Break(std::move(status)); }

uint32_t GlooCommunicator::NextSequence(uint32_t tag) {
  std::lock_guard<std::mutex> lock(mu_);
  return sequence_[tag]++;
}

void GlooCommunicator::Track(gloo::transport::UnboundBuffer* buf) {
  std::lock_guard<std::mutex> lock(mu_);
  inflight_.insert(buf);
  // Abort() may have run before this buffer existed; flag it now so its first wait
  // returns at once instead of waiting for the deadline.
  if (latch_.aborted()) {
    buf->abortWaitSend();
    buf->abortWaitRecv();
  }
}

void GlooCommunicator::Untrack(gloo::transport::UnboundBuffer* buf) {
  std::lock_guard<std::mutex> lock(mu_);
  inflight_.erase(buf);
}

StatusOr<std::unique_ptr<Communicator>> MakeGlooCommunicator(
    int rank, int size, KvStore* kv, const std::string& prefix, std::chrono::milliseconds timeout,
    const std::string& interface_or_host, const std::optional<LinkEmulation>& emulation_or_env) {
  if (kv == nullptr) return InvalidArgument("MakeGlooCommunicator: kv store is null");
  if (size < 1 || rank < 0 || rank >= size) {
    return InvalidArgument(
        fmt::format("MakeGlooCommunicator: rank {} outside [0, {})", rank, size));
  }
  if (timeout.count() <= 0) {
    return InvalidArgument("MakeGlooCommunicator: timeout must be positive");
  }
  auto emulation_or = emulation_or_env ? StatusOr<LinkEmulation>(*emulation_or_env) : LinkEmulationFromEnv();
  if (!emulation_or.ok()) return emulation_or.status().WithContext("MakeGlooCommunicator");
  const LinkEmulation emulation = *emulation_or;
  const std::string where =
      fmt::format("gloo rendezvous of rank {} of {} under '{}'", rank, size, prefix);
  const auto deadline = Clock::now() + timeout;
  KvStoreAdapter store(kv, prefix, timeout);
  IgnoreSigpipeUnlessHandled();
  try {
    gloo::transport::tcp::attr attr;
    if (!interface_or_host.empty() && if_nametoindex(interface_or_host.c_str()) != 0) {
      attr.iface = interface_or_host;
    } else {
      attr.hostname = interface_or_host;
    }
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    // Gloo lets a pair take 5x the context timeout to connect; a fifth keeps the
    // connect phase within `timeout`. Our collectives pass their own timeouts, so
    // the context timeout only matters again for raw_context() users: restore it.
    context->setTimeout(std::max(timeout / 5, std::chrono::milliseconds(1)));
    context->connectFullMesh(store, device);
    context->setTimeout(timeout);
    auto comm = std::make_unique<GlooCommunicator>(std::move(context));
    // After the handshake would be more precise, but the handshake's 1-byte
    // messages cost nothing; setting it first keeps the communicator immutable once
    // handed out.
    comm->SetLinkEmulation(emulation);
    // connectFullMesh returns once this rank's pairs are up, possibly before a peer
    // has finished its side of the handshake; a rank that then closed its
    // communicator at once would fail that peer's rendezvous. The barrier returns
    // only once every rank is through connectFullMesh.
    RETURN_IF_ERROR(comm->Handshake(std::max(
        std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()),
        std::chrono::milliseconds(1))).WithContext(where));
    return std::unique_ptr<Communicator>(std::move(comm));
  } catch (const gloo::EnforceNotMet& e) {
    return Internal(fmt::format("{}: gloo check failed: {}", where, e.what()));
  } catch (const std::exception& e) {
    // A store failure carries the better Status (which key, which deadline).
    const Status recorded = store.error();
    if (!recorded.ok()) return recorded.WithContext(where);
    return Unavailable(fmt::format("{}: {}", where, e.what()));
  } catch (...) {
    return Internal(where + ": unknown exception");
  }
}

}  // namespace shoal

// ShmCommunicator: collectives as copies through per-rank slots of one shared
// segment, each round closed by a step barrier (per-rank counters, spin then futex),
// every wait bounded by the deadline and watching Abort() and the awaited peer.
#include "collectives/shm/shm_communicator.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "collectives/dtype.h"
#include "collectives/shm/shm_segment.h"

namespace shoal {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint8_t kAllReduceKind = 1;
constexpr uint8_t kAllGatherKind = 2;
constexpr uint8_t kBroadcastKind = 3;
constexpr uint8_t kBarrierKind = 4;
constexpr uint8_t kAllToAllKind = 5;

// A parked waiter wakes at least this often to look at its deadline and at the peer
// it waits for (a dead process never bumps the futex).
constexpr auto kPollSlice = std::chrono::milliseconds(10);
constexpr auto kLivenessAfter = std::chrono::milliseconds(1);

const char* KindName(uint8_t kind) {
  switch (kind) {
    case kAllReduceKind:
      return "AllReduce";
    case kAllGatherKind:
      return "AllGather";
    case kBroadcastKind:
      return "Broadcast";
    case kBarrierKind:
      return "Barrier";
    case kAllToAllKind:
      return "AllToAll";
  }
  return "unknown";
}

std::string DescribeDesc(const shm::OpDesc& d) {
  std::string s = fmt::format("{}(tag={}", KindName(d.kind), d.tag);
  if (d.kind == kAllReduceKind) {
    s += fmt::format(", {} x {}, {}", d.count, DTypeName(static_cast<DType>(d.dtype)),
                     d.reduce == static_cast<uint8_t>(ReduceOp::kSum) ? "sum" : "average");
  } else if (d.kind != kBarrierKind) {
    s += fmt::format(", {} bytes", d.count);
  }
  if (d.kind == kBroadcastKind) s += fmt::format(", root {}", d.root);
  return s + ")";
}

bool SameCall(const shm::OpDesc& a, const shm::OpDesc& b) {
  return a.index == b.index && a.kind == b.kind && a.dtype == b.dtype && a.reduce == b.reduce &&
         a.tag == b.tag && a.root == b.root && a.count == b.count;
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

size_t EnvSize(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  return (end != v && x >= 0) ? static_cast<size_t>(x) : fallback;
}

int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

// Slice q of a round of `len` elements split n ways (the first len % n one longer).
struct Slice {
  size_t begin, length;
};
inline Slice SliceOf(size_t len, int n, int q) {
  const size_t base = len / n, extra = len % n, uq = static_cast<size_t>(q);
  return {uq * base + std::min(uq, extra), base + (uq < extra ? 1 : 0)};
}

// out = reduce(in[0..n-1]) over `len` elements, summed in rank order in f32, then
// divided (average) and rounded to the dtype once; written to both outputs.
constexpr size_t kBlock = 1024;

void ReduceF32(const char* const* in, int n, size_t len, bool average, char* out1, char* out2) {
  alignas(64) float acc[kBlock];
  const float divisor = static_cast<float>(n);
  for (size_t i = 0; i < len; i += kBlock) {
    const size_t b = std::min(kBlock, len - i);
    const auto* a0 = reinterpret_cast<const float*>(in[0]) + i;
    const auto* a1 = reinterpret_cast<const float*>(in[1]) + i;
    for (size_t j = 0; j < b; ++j) acc[j] = a0[j] + a1[j];
    for (int q = 2; q < n; ++q) {
      const auto* aq = reinterpret_cast<const float*>(in[q]) + i;
      for (size_t j = 0; j < b; ++j) acc[j] += aq[j];
    }
    if (average) {
      for (size_t j = 0; j < b; ++j) acc[j] /= divisor;
    }
    std::memcpy(out1 + i * 4, acc, b * 4);
    std::memcpy(out2 + i * 4, acc, b * 4);
  }
}

void Reduce16(const char* const* in, int n, size_t len, DType dtype, bool average, char* out1,
              char* out2) {
  alignas(64) float acc[kBlock];
  alignas(64) float tmp[kBlock];
  const float divisor = static_cast<float>(n);
  for (size_t i = 0; i < len; i += kBlock) {
    const size_t b = std::min(kBlock, len - i);
    ToF32(in[0] + i * 2, dtype, acc, b);
    for (int q = 1; q < n; ++q) {
      ToF32(in[q] + i * 2, dtype, tmp, b);
      for (size_t j = 0; j < b; ++j) acc[j] += tmp[j];
    }
    if (average) {
      for (size_t j = 0; j < b; ++j) acc[j] /= divisor;
    }
    FromF32(acc, dtype, out1 + i * 2, b);
    std::memcpy(out2 + i * 2, out1 + i * 2, b * 2);
  }
}

}  // namespace

// One collective call: its name, tag, deadline and the descriptor every peer must match.
class ShmCommunicator::Op {
 public:
  Op(const char* name, const CollectiveOptions& opts)
      : name(name), tag(opts.tag), timeout(opts.timeout), deadline(Clock::now() + opts.timeout) {}

  std::string Name() const { return fmt::format("{}(tag={})", name, tag); }

  const char* name;
  uint32_t tag;
  std::chrono::milliseconds timeout;
  Clock::time_point deadline;
  shm::OpDesc desc;
  bool checked = false;  // peers' descriptors compared (after the first wait)
  uint32_t end_step = 0;  // the step at which every rank has finished this call
};

ShmCommunicator::ShmCommunicator(int rank, int size, std::unique_ptr<shm::Segment> segment,
                                 int spin_us, int yield_us)
    : rank_(rank), size_(size), seg_(std::move(segment)), spin_us_(spin_us), yield_us_(yield_us) {}

ShmCommunicator::~ShmCommunicator() { Close(/*failed=*/false); }

void ShmCommunicator::Close(bool failed) {
  if (!seg_) return;
  std::atomic<uint32_t>& state = seg_->control(rank_).state;
  // Never downgrade kFailed to kClosed (destruction after an abort).
  if (failed || state.load() != shm::kFailed) state.store(failed ? shm::kFailed : shm::kClosed);
  seg_->WakeAll();
}

void ShmCommunicator::Abort() {
  latch_.Abort();
  // Peers waiting on the segment fail now rather than at their deadline, and a call
  // of ours parked on the futex wakes up.
  Close(/*failed=*/true);
}

Status ShmCommunicator::Fail(Status status) {
  Close(/*failed=*/true);
  return latch_.Break(std::move(status));
}

void ShmCommunicator::Arrive() {
  ++step_;
  seg_->control(rank_).seq.store(step_);
  seg_->WakeAll();
}

Status ShmCommunicator::Wait(Op& op) {
  // Wrap-safe: a peer is at most a few steps ahead of or behind this rank.
  auto reached = [&](int q) {
    return static_cast<int32_t>(seg_->control(q).seq.load(std::memory_order_acquire) - step_) >= 0;
  };
  auto missing = [&]() -> int {
    for (int q = 0; q < size_; ++q) {
      if (q != rank_ && !reached(q)) return q;
    }
    return -1;
  };
  int q = missing();
  if (q >= 0 && spin_us_ > 0) {
    const auto spin_end = Clock::now() + std::chrono::microseconds(spin_us_);
    for (unsigned i = 1; q >= 0; ++i) {
      CpuRelax();
      if ((i & 63) == 0 && (latch_.aborted() || Clock::now() >= spin_end)) break;
      q = missing();
    }
  }
  if (q >= 0 && yield_us_ > 0) {
    // Oversubscribed: hand the core to whoever is runnable (often the rank we wait
    // for) but stay ready to go on the moment it arrives, before parking for good.
    const auto yield_end = Clock::now() + std::chrono::microseconds(yield_us_);
    while (q >= 0 && !latch_.aborted() && Clock::now() < yield_end) {
      sched_yield();
      q = missing();
    }
  }
  shm::SegmentHeader& h = seg_->header();
  // Liveness costs a poll() per peer: only for waits that last (a dead peer is found
  // within a millisecond or so more).
  const auto check_liveness_from = Clock::now() + kLivenessAfter;
  while (q >= 0) {
    if (latch_.aborted()) return Aborted(fmt::format("{} aborted while waiting for rank {}", op.Name(), q));
    // Every other rank, not just the first missing one: a silent live rank must not
    // hide one that will never come. A rank that failed or was aborted ends the call
    // (its generation is over); one that was destroyed or died ends it if it had not
    // yet arrived at the call's last step.
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      const uint32_t state = seg_->control(p).state.load();
      if (state == shm::kFailed) {
        return Fail(Aborted(fmt::format("{}: rank {} failed or was aborted while this rank waited for rank {}",
                                        op.Name(), p, q)));
      }
      const uint32_t seq = seg_->control(p).seq.load(std::memory_order_acquire);
      if (static_cast<int32_t>(seq - op.end_step) >= 0) continue;
      if (state == shm::kClosed) {
        return Fail(Aborted(fmt::format("{}: rank {} closed its communicator (left) before finishing this call",
                                        op.Name(), p)));
      }
      if (Clock::now() >= check_liveness_from && seg_->Dead(p)) {
        return Fail(Aborted(fmt::format("{}: rank {} (pid {}) died before finishing this call",
                                        op.Name(), p, seg_->pid(p))));
      }
    }
    const auto now = Clock::now();
    if (now >= op.deadline) {
      return Fail(DeadlineExceeded(fmt::format("{} timed out after {} ms waiting for rank {}",
                                               op.Name(), op.timeout.count(), q)));
    }
    // Register as a waiter before the last look, so an arrival after the look either
    // sees us (and wakes the futex) or changed `wake` before we park (no sleep).
    const uint32_t seen = h.wake.load();
    h.waiters.fetch_add(1);
    q = missing();
    if (q >= 0 && !latch_.aborted()) {
      seg_->Park(seen, std::min<Clock::duration>(op.deadline - now, kPollSlice));
    }
    h.waiters.fetch_sub(1);
    q = missing();
  }
  if (latch_.aborted()) return Aborted(fmt::format("{} aborted", op.Name()));
  if (!op.checked) {
    op.checked = true;
    RETURN_IF_ERROR(CheckPeers(op));
  }
  return OkStatus();
}

Status ShmCommunicator::CheckPeers(Op& op) {
  // A peer past this step has written this operation's descriptor; it cannot reach
  // the next operation with the same parity before this rank arrives again.
  for (int q = 0; q < size_; ++q) {
    if (q == rank_) continue;
    const shm::OpDesc theirs = seg_->control(q).desc[op.desc.index & 1];
    if (!SameCall(theirs, op.desc)) {
      const std::string what = fmt::format(
          "calls do not match: rank {} made {} as its call #{} while this rank made {} as #{}; "
          "every rank must make the same collective calls in the same order",
          q, DescribeDesc(theirs), theirs.index, DescribeDesc(op.desc), op.desc.index);
      // A peer that has closed (it may have found the mismatch first) is gone either way.
      if (seg_->control(q).state.load() >= shm::kClosed) {
        return Fail(Aborted(fmt::format("{}: rank {} closed its communicator; {}", op.Name(), q, what)));
      }
      return Fail(Internal(fmt::format("{}: {}", op.Name(), what)));
    }
  }
  return OkStatus();
}

template <typename Body>
Status ShmCommunicator::Run(const char* name, uint8_t kind, const CollectiveOptions& opts,
                            const shm::OpDesc& desc, Body&& body) {
  if (opts.timeout.count() <= 0) {
    return InvalidArgument(fmt::format("{}(tag={}): timeout must be positive", name, opts.tag));
  }
  RETURN_IF_ERROR(latch_.Check(name));
  Op op(name, opts);
  std::unique_lock<std::timed_mutex> lock(call_mu_, std::defer_lock);
  if (!lock.try_lock_until(op.deadline)) {
    return DeadlineExceeded(fmt::format(
        "{} timed out after {} ms waiting for this communicator's previous call (another thread)",
        op.Name(), opts.timeout.count()));
  }
  RETURN_IF_ERROR(latch_.Check(name));
  op.desc = desc;
  op.desc.index = ops_++;
  op.desc.kind = kind;
  op.desc.tag = opts.tag;
  // Published before this rank's first arrival in the call (whose store releases it).
  if (seg_) seg_->control(rank_).desc[op.desc.index & 1] = op.desc;
  return body(op);
}

Status ShmCommunicator::AllReduce(void* data, size_t count, DType dtype, ReduceOp reduce,
                                  const CollectiveOptions& opts) {
  if (DTypeSize(dtype) == 0) return InvalidArgument("AllReduce: unknown dtype");
  if (count > 0 && data == nullptr) return InvalidArgument("AllReduce: data is null");
  shm::OpDesc desc;
  desc.count = count;
  desc.dtype = static_cast<uint8_t>(dtype);
  desc.reduce = static_cast<uint8_t>(reduce);
  return Run("AllReduce", kAllReduceKind, opts, desc, [&](Op& op) -> Status {
    // Nothing to exchange; the average over one rank is the value itself.
    if (count == 0 || size_ == 1) return OkStatus();
    const size_t bytes = count * DTypeSize(dtype);
    if (bytes <= OneShotLimit(size_, seg_->half_bytes())) {
      return ReduceOneShot(op, static_cast<char*>(data), count, dtype, reduce);
    }
    return ReduceRound(op, static_cast<char*>(data), count, dtype, reduce);
  });
}

Status ShmCommunicator::ReduceOneShot(Op& op, char* data, size_t count, DType dtype, ReduceOp reduce) {
  const size_t bytes = count * DTypeSize(dtype);
  op.end_step = step_ + 1;
  const int half = static_cast<int>(rounds_++ & 1);
  std::memcpy(seg_->slot(rank_, half), data, bytes);
  Arrive();
  RETURN_IF_ERROR(Wait(op));
  // Every rank sums all of it, in rank order: the same operations on the same values,
  // so the same bits everywhere.
  std::vector<const char*> in(size_);
  for (int q = 0; q < size_; ++q) in[q] = q == rank_ ? data : seg_->slot(q, half);
  if (dtype == DType::kF32) {
    ReduceF32(in.data(), size_, count, reduce == ReduceOp::kAverage, data, data);
  } else {
    Reduce16(in.data(), size_, count, dtype, reduce == ReduceOp::kAverage, data, data);
  }
  counters_.sent += static_cast<int64_t>(bytes);
  counters_.received += static_cast<int64_t>((size_ - 1) * bytes);
  return OkStatus();
}

Status ShmCommunicator::ReduceRound(Op& op, char* data, size_t count, DType dtype, ReduceOp reduce) {
  const size_t es = DTypeSize(dtype);
  const size_t per_round = seg_->half_bytes() / es;
  const int n = size_;
  std::vector<const char*> in(n);
  op.end_step = step_ + 2 * static_cast<uint32_t>((count + per_round - 1) / per_round);
  for (size_t off = 0; off < count; off += per_round) {
    const size_t len = std::min(per_round, count - off);
    const int half = static_cast<int>(rounds_++ & 1);
    char* base = data + off * es;
    char* mine = seg_->slot(rank_, half);
    const Slice own = SliceOf(len, n, rank_);
    // Everything but the slice this rank reduces itself (it reads that from `data`).
    std::memcpy(mine, base, own.begin * es);
    const size_t own_end = own.begin + own.length;
    std::memcpy(mine + own_end * es, base + own_end * es, (len - own_end) * es);
    Arrive();
    RETURN_IF_ERROR(Wait(op));
    if (own.length > 0) {
      for (int q = 0; q < n; ++q) {
        in[q] = (q == rank_ ? base : seg_->slot(q, half)) + own.begin * es;
      }
      char* out = base + own.begin * es;
      if (dtype == DType::kF32) {
        ReduceF32(in.data(), n, own.length, reduce == ReduceOp::kAverage, out, mine + own.begin * es);
      } else {
        Reduce16(in.data(), n, own.length, dtype, reduce == ReduceOp::kAverage, out,
                 mine + own.begin * es);
      }
    }
    Arrive();
    RETURN_IF_ERROR(Wait(op));
    for (int q = 0; q < n; ++q) {
      if (q == rank_) continue;
      const Slice s = SliceOf(len, n, q);
      std::memcpy(base + s.begin * es, seg_->slot(q, half) + s.begin * es, s.length * es);
    }
    counters_.sent += static_cast<int64_t>(len * es);
    counters_.received += static_cast<int64_t>(((n - 1) * own.length + len - own.length) * es);
  }
  return OkStatus();
}

Status ShmCommunicator::AllGather(const void* send, void* recv, size_t bytes_per_rank,
                                  const CollectiveOptions& opts) {
  if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
    return InvalidArgument("AllGather: null buffer");
  }
  shm::OpDesc desc;
  desc.count = bytes_per_rank;
  return Run("AllGather", kAllGatherKind, opts, desc, [&](Op& op) -> Status {
    if (bytes_per_rank == 0) return OkStatus();
    auto* out = static_cast<char*>(recv);
    // memmove: the caller may pass its slot of `recv` as `send`.
    std::memmove(out + rank_ * bytes_per_rank, send, bytes_per_rank);
    if (size_ == 1) return OkStatus();
    const char* own = out + rank_ * bytes_per_rank;
    const size_t per_round = seg_->half_bytes();
    op.end_step = step_ + static_cast<uint32_t>((bytes_per_rank + per_round - 1) / per_round);
    for (size_t off = 0; off < bytes_per_rank; off += per_round) {
      const size_t len = std::min(per_round, bytes_per_rank - off);
      const int half = static_cast<int>(rounds_++ & 1);
      std::memcpy(seg_->slot(rank_, half), own + off, len);
      Arrive();
      RETURN_IF_ERROR(Wait(op));
      for (int q = 0; q < size_; ++q) {
        if (q != rank_) std::memcpy(out + q * bytes_per_rank + off, seg_->slot(q, half), len);
      }
      counters_.sent += static_cast<int64_t>(len);
      counters_.received += static_cast<int64_t>((size_ - 1) * len);
    }
    return OkStatus();
  });
}

Status ShmCommunicator::AllToAll(const void* send, void* recv, size_t bytes_per_rank,
                                 const CollectiveOptions& opts) {
  if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
    return InvalidArgument("AllToAll: null buffer");
  }
  shm::OpDesc desc;
  desc.count = bytes_per_rank;
  return Run("AllToAll", kAllToAllKind, opts, desc, [&](Op& op) -> Status {
    if (bytes_per_rank == 0) return OkStatus();
    const auto* in = static_cast<const char*>(send);
    auto* out = static_cast<char*>(recv);
    std::memcpy(out + rank_ * bytes_per_rank, in + rank_ * bytes_per_rank, bytes_per_rank);
    if (size_ == 1) return OkStatus();
    // Each round moves `per_block` bytes of every block: block p of this rank's slot
    // holds the piece for rank p.
    const size_t per_block = seg_->half_bytes() / size_;
    op.end_step = step_ + static_cast<uint32_t>((bytes_per_rank + per_block - 1) / per_block);
    for (size_t off = 0; off < bytes_per_rank; off += per_block) {
      const size_t len = std::min(per_block, bytes_per_rank - off);
      const int half = static_cast<int>(rounds_++ & 1);
      char* mine = seg_->slot(rank_, half);
      for (int p = 0; p < size_; ++p) {
        if (p != rank_) std::memcpy(mine + p * per_block, in + p * bytes_per_rank + off, len);
      }
      Arrive();
      RETURN_IF_ERROR(Wait(op));
      for (int q = 0; q < size_; ++q) {
        if (q != rank_) {
          std::memcpy(out + q * bytes_per_rank + off, seg_->slot(q, half) + rank_ * per_block, len);
        }
      }
      counters_.sent += static_cast<int64_t>((size_ - 1) * len);
      counters_.received += static_cast<int64_t>((size_ - 1) * len);
    }
    return OkStatus();
  });
}

Status ShmCommunicator::Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) {
  if (root < 0 || root >= size_) {
    return InvalidArgument(fmt::format("Broadcast: root {} outside [0, {})", root, size_));
  }
  if (bytes > 0 && data == nullptr) return InvalidArgument("Broadcast: data is null");
  shm::OpDesc desc;
  desc.count = bytes;
  desc.root = root;
  return Run("Broadcast", kBroadcastKind, opts, desc, [&](Op& op) -> Status {
    if (bytes == 0 || size_ == 1) return OkStatus();
    auto* buf = static_cast<char*>(data);
    const size_t per_round = seg_->half_bytes();
    op.end_step = step_ + static_cast<uint32_t>((bytes + per_round - 1) / per_round);
    for (size_t off = 0; off < bytes; off += per_round) {
      const size_t len = std::min(per_round, bytes - off);
      const int half = static_cast<int>(rounds_++ & 1);
      if (rank_ == root) {
        std::memcpy(seg_->slot(root, half), buf + off, len);
        counters_.sent += static_cast<int64_t>(len);
      }
      // Everyone waits for everyone, not the readers for the root alone: a rank may
      // write its slot half again two rounds on only once every rank has finished
      // reading it (ranks arrive after reading), whatever call the rounds belong to.
      Arrive();
      RETURN_IF_ERROR(Wait(op));
      if (rank_ != root) {
        std::memcpy(buf + off, seg_->slot(root, half), len);
        counters_.received += static_cast<int64_t>(len);
      }
    }
    return OkStatus();
  });
}

Status ShmCommunicator::Barrier(const CollectiveOptions& opts) {
  return Run("Barrier", kBarrierKind, opts, shm::OpDesc{}, [&](Op& op) -> Status {
    if (size_ == 1) return OkStatus();
    op.end_step = step_ + 1;
    Arrive();
    return Wait(op);
  });
}

StatusOr<std::unique_ptr<Communicator>> MakeShmCommunicator(int rank, int size, KvStore* kv,
                                                            const std::string& prefix,
                                                            std::chrono::milliseconds timeout,
                                                            const ShmOptions& options) {
  if (size < 1 || rank < 0 || rank >= size) {
    return InvalidArgument(fmt::format("MakeShmCommunicator: rank {} outside [0, {})", rank, size));
  }
  if (timeout.count() <= 0) return InvalidArgument("MakeShmCommunicator: timeout must be positive");
  if (kv == nullptr && size > 1) return InvalidArgument("MakeShmCommunicator: kv store is null");
  int spin_us = options.spin_us;
  if (spin_us < 0) {
    // Spinning only pays while every rank has a core: oversubscribed, a spinning
    // waiter takes the core from the very rank it waits for, so park at once.
    const int fallback = size <= UsableCpus() ? 50 : 0;
    spin_us = static_cast<int>(EnvSize("SHOAL_SHM_SPIN_US", static_cast<size_t>(fallback)));
  }
  int yield_us = options.yield_us;
  if (yield_us < 0) yield_us = static_cast<int>(EnvSize("SHOAL_SHM_YIELD_US", 0));
  if (size == 1) {
    return std::unique_ptr<Communicator>(new ShmCommunicator(0, 1, nullptr, spin_us, yield_us));
  }
  const size_t slot_bytes =
      options.slot_bytes > 0 ? options.slot_bytes
                             : EnvSize("SHOAL_SHM_SLOT_KIB", ShmCommunicator::kDefaultSlotBytes >> 10) << 10;
  const std::string where = fmt::format("shm rendezvous of rank {} of {} under '{}'", rank, size, prefix);
  const auto deadline = Clock::now() + timeout;
  // The worker's prefixes end in '/', tests' may not.
  const std::string key = prefix + (prefix.empty() || prefix.back() == '/' ? "" : "/") + "shm/segment";
  std::unique_ptr<shm::Segment> seg;
  if (rank == 0) {
    ASSIGN_OR_RETURN(seg, shm::Segment::Create(shm::SegmentName(prefix), size, slot_bytes));
    const Status published = kv->Set(key, seg->name());
    if (!published.ok()) {
      seg->Unlink();
      return published.WithContext(where);
    }
  } else {
    auto name = kv->Get(key, timeout);
    if (!name.ok()) return name.status().WithContext(where);
    auto opened = shm::Segment::Open(*name, size);
    if (!opened.ok()) return opened.status().WithContext(where);
    seg = std::move(opened).value();
  }
  const Status attached = seg->Attach(rank, deadline);
  if (!attached.ok()) {
    // Any rank may remove the name: a set-up that failed here is failed for the whole
    // generation, and the creator may be the rank that is missing.
    seg->Unlink();
    seg->control(rank).state.store(shm::kFailed);
    seg->WakeAll();
    return attached.WithContext(where);
  }
  seg->WatchPeers(rank);
  return std::unique_ptr<Communicator>(new ShmCommunicator(rank, size, std::move(seg), spin_us, yield_us));
}

}  // namespace shoal

// Internal to the Gloo backend (gloo_communicator.cc, gloo_ring.cc): the per-call
// Op (deadline, slot, waits that count bytes and map Gloo's outcomes to Status), the
// registered Buffer that Abort() can wake, and the ring's chunk arithmetic.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gloo/context.h>
#include <gloo/transport/unbound_buffer.h>

#include "collectives/bandwidth.h"
#include "collectives/dtype.h"
#include "collectives/gloo/gloo_communicator.h"

namespace shoal {
namespace gloo_detail {

using Clock = std::chrono::steady_clock;

// The count split into n chunks whose lengths differ by at most one (the first
// count % n chunks get the extra element); with count < n some are empty.
struct Chunks {
  std::vector<size_t> offset, length;
  size_t max_length = 0;
};

inline Chunks SplitEvenly(size_t count, int n) {
  Chunks c;
  const size_t base = count / n, extra = count % n;
  size_t at = 0;
  for (int i = 0; i < n; ++i) {
    const size_t len = base + (static_cast<size_t>(i) < extra ? 1 : 0);
    c.offset.push_back(at);
    c.length.push_back(len);
    c.max_length = std::max(c.max_length, len);
    at += len;
  }
  return c;
}

inline void Accumulate(float* acc, const void* wire, DType dtype, size_t n) {
  switch (dtype) {
    case DType::kF32: {
      const auto* w = static_cast<const float*>(wire);
      for (size_t i = 0; i < n; ++i) acc[i] += w[i];
      return;
    }
    case DType::kBF16: {
      const auto* w = static_cast<const uint16_t*>(wire);
      for (size_t i = 0; i < n; ++i) acc[i] += BF16ToF32(w[i]);
      return;
    }
    case DType::kF16: {
      const auto* w = static_cast<const uint16_t*>(wire);
      for (size_t i = 0; i < n; ++i) acc[i] += F16ToF32(w[i]);
      return;
    }
  }
}

inline int Mod(int a, int n) { return ((a % n) + n) % n; }

}  // namespace gloo_detail

// An unbound buffer registered with the communicator for as long as it lives, so
// that Abort() can wake its waits. It is unregistered before Gloo's destructor runs;
// that destructor blocks until the I/O thread no longer touches the memory, and
// leaves any still-posted operation pointing at nothing (hence "unusable after a
// failure").
class GlooCommunicator::Buffer {
 public:
  Buffer(GlooCommunicator* comm, void* ptr, size_t bytes)
      : comm_(comm), buf_(comm->context_->createUnboundBuffer(ptr, bytes)) {
    comm_->Track(buf_.get());
  }
  ~Buffer() { comm_->Untrack(buf_.get()); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  gloo::transport::UnboundBuffer* get() { return buf_.get(); }

 private:
  GlooCommunicator* comm_;
  std::unique_ptr<gloo::transport::UnboundBuffer> buf_;
};

// One collective call: its deadline, its slot, and waits that count bytes and turn
// Gloo's outcomes (done, aborted, exception) into Status.
class GlooCommunicator::Op {
 public:
  Op(GlooCommunicator* comm, const char* name, uint8_t kind, const CollectiveOptions& opts)
      : comm_(comm),
        name_(name),
        tag_(opts.tag),
        timeout_(opts.timeout),
        deadline_(gloo_detail::Clock::now() + opts.timeout),
        // [kind:8][tag:32][sequence:24]: the sequence wraps after 16M calls on one
        // tag, long after any earlier call with the same value has finished.
        slot_((static_cast<uint64_t>(kind) << 56) | (static_cast<uint64_t>(opts.tag) << 24) |
              (comm->NextSequence(opts.tag) & 0xFFFFFFu)) {}

  void PostSend(Buffer& b, int to, size_t offset, size_t bytes) {
    // Emulated link (bandwidth.h): the cap applies before the message is posted.
    if (comm_->throttle_) comm_->throttle_->BeforeSend(bytes);
    b.get()->send(to, slot_, offset, bytes);
  }
  void PostRecv(Buffer& b, int from, size_t offset, size_t bytes) {
    b.get()->recv(from, slot_, offset, bytes);
  }
  Status WaitSend(Buffer& b, int to, size_t bytes) { return Wait(b, true, to, bytes); }
  Status WaitRecv(Buffer& b, int from, size_t bytes) { return Wait(b, false, from, bytes); }

  // Receives `rbytes` from `from` while sending `sbytes` to `to`; empty sides are
  // skipped (both ends compute the same chunk lengths, so they skip together).
  Status Exchange(Buffer& sbuf, int to, size_t soffset, size_t sbytes, Buffer& rbuf, int from,
                  size_t roffset, size_t rbytes) {
    if (rbytes > 0) PostRecv(rbuf, from, roffset, rbytes);
    if (sbytes > 0) PostSend(sbuf, to, soffset, sbytes);
    if (rbytes > 0) RETURN_IF_ERROR(WaitRecv(rbuf, from, rbytes));
    if (sbytes > 0) RETURN_IF_ERROR(WaitSend(sbuf, to, sbytes));
    return OkStatus();
  }

 private:
  Status Wait(Buffer& b, bool send, int peer, size_t bytes) {
    const char* verb = send ? "send to" : "receive from";
    const auto left = std::max(
        std::chrono::ceil<std::chrono::milliseconds>(deadline_ - gloo_detail::Clock::now()),
        std::chrono::milliseconds(0));
    bool done = false;
    try {
      // Gloo reports an abortWait*() by returning false, and a timeout or a broken
      // connection by throwing (after closing every pair on a timeout).
      done = send ? b.get()->waitSend(left) : b.get()->waitRecv(left);
    } catch (const std::exception& e) {
      if (comm_->latch_.aborted()) return Aborted(Describe("aborted while waiting to", verb, peer));
      const bool timed_out = gloo_detail::Clock::now() >= deadline_ ||
                             std::strstr(e.what(), "Timed out") != nullptr;
      if (timed_out) {
        return comm_->MarkBroken(DeadlineExceeded(
            fmt::format("{} timed out after {} ms waiting to {} rank {} ({} bytes)", Name(),
                        timeout_.count(), verb, peer, bytes)));
      }
      return comm_->MarkBroken(Aborted(fmt::format(
          "{} lost the connection while waiting to {} rank {}: {}", Name(), verb, peer, e.what())));
    }
    if (!done) return Aborted(Describe("aborted while waiting to", verb, peer));
    (send ? comm_->counters_.sent : comm_->counters_.received) += static_cast<int64_t>(bytes);
    if (comm_->latch_.aborted()) {
      return Aborted(Describe("aborted after it finished waiting to", verb, peer));
    }
    return OkStatus();
  }

  std::string Name() const { return fmt::format("{}(tag={})", name_, tag_); }
  std::string Describe(const char* what, const char* verb, int peer) const {
    return fmt::format("{} {} {} rank {}", Name(), what, verb, peer);
  }

  GlooCommunicator* comm_;
  const char* name_;
  uint32_t tag_;
  std::chrono::milliseconds timeout_;
  gloo_detail::Clock::time_point deadline_;
  uint64_t slot_;
};

}  // namespace shoal

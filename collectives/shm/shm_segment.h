// The shared-memory segment behind the shm communicator: one POSIX shm object per
// job generation (and host), its layout (a control block per rank, a data slot per
// rank), the futex that sleeping waiters park on, and peer liveness. Internal to
// collectives/shm/.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal::shm {

static_assert(std::atomic<uint32_t>::is_always_lock_free, "futex words must be plain 32-bit atomics");

// What a rank is about to do, published before its first arrival in an operation, so
// that ranks calling different collectives fail with a message instead of mixing data.
struct OpDesc {
  uint32_t index = 0;  // per-communicator operation counter, equal on every rank
  uint8_t kind = 0;
  uint8_t dtype = 0;
  uint8_t reduce = 0;
  uint8_t unused = 0;
  uint32_t tag = 0;
  int32_t root = -1;
  uint64_t count = 0;  // elements (allreduce) or bytes per rank (others)
};
static_assert(sizeof(OpDesc) == 24);

// kClosed: destroyed after its calls (a generation ending); kFailed: aborted or failed,
// so every call still waiting on the segment fails at once.
enum RankState : uint32_t { kNotAttached = 0, kAttached = 1, kClosed = 2, kFailed = 3 };

// One per rank, on its own cache line: written by that rank only, read by all.
struct alignas(64) RankControl {
  std::atomic<uint32_t> seq;    // the last step this rank arrived at (wraps)
  std::atomic<uint32_t> state;  // RankState
  std::atomic<int32_t> pid;
  uint32_t unused;
  OpDesc desc[2];  // the descriptor of operation `index` lives at index & 1
};
static_assert(sizeof(RankControl) == 64);

struct alignas(64) SegmentHeader {
  uint64_t magic;
  uint32_t size;
  uint32_t version;
  uint64_t slot_bytes;
  uint64_t total_bytes;
  alignas(64) std::atomic<uint32_t> attached;  // ranks that have mapped the segment
  alignas(64) std::atomic<uint32_t> wake;      // futex word: bumped by every arrival
  std::atomic<uint32_t> waiters;               // threads parked (or about to park) on `wake`
};

// A mapped segment. The descriptor is closed as soon as the mapping exists, so a
// live communicator holds no file descriptor for it; the name is unlinked once every
// rank has mapped it (Attach), so a crash after that leaks nothing.
class Segment {
 public:
  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // Creates `name` (O_EXCL) sized for `size` ranks with `slot_bytes` each, reserving
  // the memory (posix_fallocate: a full /dev/shm is an error here, not a SIGBUS later).
  static StatusOr<std::unique_ptr<Segment>> Create(const std::string& name, int size,
                                                   size_t slot_bytes);
  // Maps an existing segment and checks it was made for `size` ranks.
  static StatusOr<std::unique_ptr<Segment>> Open(const std::string& name, int size);

  // Publishes this rank's pid, counts it as attached, and unlinks the name if it was
  // the last to map it. Then waits (polling, with peer liveness) until all have.
  Status Attach(int rank, std::chrono::steady_clock::time_point deadline);
  // Removes the name if it still exists (the creator on a failed set-up).
  void Unlink();

  SegmentHeader& header() { return *header_; }
  RankControl& control(int rank) { return controls_[rank]; }
  // Rank `rank`'s data slot, half `half` (0 or 1): half_bytes() each.
  char* slot(int rank, int half) {
    return data_ + static_cast<size_t>(rank) * slot_bytes_ + static_cast<size_t>(half) * half_bytes();
  }
  size_t half_bytes() const { return slot_bytes_ / 2; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }

  // Wakes every thread parked on the futex (any process).
  void WakeAll();
  // Parks until `wake` moves from `seen` or `timeout` passes (at most), whichever is
  // first; spurious returns are fine, callers re-check their condition.
  void Park(uint32_t seen, std::chrono::nanoseconds timeout);

  // Opens a pidfd for every peer running in another process; later, Dead(q) is a
  // cheap poll. A peer that already exited counts as dead.
  void WatchPeers(int rank);
  bool Dead(int peer) const;
  int32_t pid(int peer) { return controls_[peer].pid.load(std::memory_order_acquire); }

 private:
  Segment(std::string name, void* base, size_t bytes);
  static StatusOr<std::unique_ptr<Segment>> Map(const std::string& name, int fd, size_t bytes);

  std::string name_;
  void* base_ = nullptr;
  size_t bytes_ = 0;
  SegmentHeader* header_ = nullptr;
  RankControl* controls_ = nullptr;
  char* data_ = nullptr;
  size_t slot_bytes_ = 0;
  int size_ = 0;
  // Per peer: a pidfd (>= 0), kNoWatch (same process, or pidfd unsupported: fall
  // back to kill(pid, 0) and /proc), or kGone (had exited when we looked).
  static constexpr int kNoWatch = -1;
  static constexpr int kGone = -2;
  std::vector<int> pidfds_;
};

// Bytes of the whole segment for `size` ranks of `slot_bytes`.
size_t SegmentBytes(int size, size_t slot_bytes);

// A name for the segment of the rendezvous scope `prefix`, unique to this creator.
std::string SegmentName(const std::string& prefix);

}  // namespace shoal::shm

// Segment: create/open/map a POSIX shm object, the attach handshake that unlinks the
// name once every rank holds a mapping, the futex, and peer liveness through pidfds.
#include "collectives/shm/shm_segment.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include <fmt/format.h>

namespace shoal::shm {
namespace {

constexpr uint64_t kMagic = 0x4d48534c414f4853ULL;  // "SHOALSHM" little-endian
constexpr uint32_t kVersion = 1;
constexpr size_t kPage = 4096;

size_t RoundUp(size_t v, size_t to) { return (v + to - 1) / to * to; }

size_t ControlBytes(int size) {
  return RoundUp(sizeof(SegmentHeader) + static_cast<size_t>(size) * sizeof(RankControl), kPage);
}

std::string Errno(int err) { return std::strerror(err); }

// True if `pid` has exited (or is a zombie): the fallback where pidfds are missing.
bool ExitedByProc(int32_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  // "pid (comm) S ...": the state follows the last ')', comm may contain anything.
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() &&
         (line[close + 2] == 'Z' || line[close + 2] == 'X');
}

}  // namespace

size_t SegmentBytes(int size, size_t slot_bytes) {
  return ControlBytes(size) + static_cast<size_t>(size) * slot_bytes;
}

std::string SegmentName(const std::string& prefix) {
  // One slash, at the front (shm_open's portable form); the hash of the job and
  // generation scope plus the creator's pid and a random word keep names apart when a
  // prefix is reused by a test or a restarted coordinator.
  std::random_device rd;
  return fmt::format("/shoal-{:016x}-{}-{:08x}", std::hash<std::string>{}(prefix), ::getpid(),
                     rd());
}

Segment::Segment(std::string name, void* base, size_t bytes)
    : name_(std::move(name)), base_(base), bytes_(bytes) {
  header_ = static_cast<SegmentHeader*>(base_);
}

Segment::~Segment() {
  for (int fd : pidfds_) {
    if (fd >= 0) ::close(fd);
  }
  if (base_ != nullptr) ::munmap(base_, bytes_);
}

StatusOr<std::unique_ptr<Segment>> Segment::Map(const std::string& name, int fd, size_t bytes) {
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps the object alive
  if (base == MAP_FAILED) {
    return Unavailable(fmt::format("mmap of shm segment {} ({} bytes): {}", name, bytes, Errno(err)));
  }
  return std::unique_ptr<Segment>(new Segment(name, base, bytes));
}

StatusOr<std::unique_ptr<Segment>> Segment::Create(const std::string& name, int size,
                                                   size_t slot_bytes) {
  slot_bytes = RoundUp(std::max<size_t>(slot_bytes, 2 * kPage), 2 * kPage);
  const size_t bytes = SegmentBytes(size, slot_bytes);
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) return Unavailable(fmt::format("shm_open({}, create): {}", name, Errno(errno)));
  // posix_fallocate returns the error instead of setting errno.
  const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  if (err != 0) {
    ::close(fd);
    ::shm_unlink(name.c_str());
    return Unavailable(fmt::format(
        "reserving {} MiB for shm segment {}: {} (is /dev/shm large enough? containers "
        "often mount 64 MiB: docker --shm-size, or SHOAL_SHM_SLOT_KIB to shrink the slots)",
        bytes >> 20, name, Errno(err)));
  }
  auto seg_or = Map(name, fd, bytes);
  if (!seg_or.ok()) {
    ::shm_unlink(name.c_str());
    return seg_or.status();
  }
  auto seg = std::move(seg_or).value();
  // The pages are zero (tmpfs), which is a valid state for every atomic member.
  SegmentHeader& h = *seg->header_;
  h.size = static_cast<uint32_t>(size);
  h.version = kVersion;
  h.slot_bytes = slot_bytes;
  h.total_bytes = bytes;
  // The magic last: Open() checks it, so a reader never sees a half-written header
  // (the name is only published through the store after Create returns anyway).
  std::atomic_thread_fence(std::memory_order_release);
  h.magic = kMagic;
  seg->size_ = size;
  seg->slot_bytes_ = slot_bytes;
  seg->controls_ = reinterpret_cast<RankControl*>(static_cast<char*>(seg->base_) + sizeof(SegmentHeader));
  seg->data_ = static_cast<char*>(seg->base_) + ControlBytes(size);
  return seg;
}

StatusOr<std::unique_ptr<Segment>> Segment::Open(const std::string& name, int size) {
  const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    const int err = errno;
    return Unavailable(fmt::format(
        "shm_open({}): {}{}", name, Errno(err),
        err == ENOENT ? " (the creator gave up on the set-up, or this rank is not on the "
                        "creator's host: ranks labelled as one host must share /dev/shm)"
                      : ""));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(SegmentHeader))) {
    ::close(fd);
    return Internal(fmt::format("shm segment {} is too small or unreadable", name));
  }
  ASSIGN_OR_RETURN(auto seg, Map(name, fd, static_cast<size_t>(st.st_size)));
  const SegmentHeader& h = *seg->header_;
  if (h.magic != kMagic || h.version != kVersion) {
    return Internal(fmt::format("shm segment {} has no valid header (magic {:#x})", name, h.magic));
  }
  if (h.size != static_cast<uint32_t>(size) || h.total_bytes != static_cast<size_t>(st.st_size) ||
      SegmentBytes(size, h.slot_bytes) != h.total_bytes) {
    return InvalidArgument(fmt::format(
        "shm segment {} was made for {} ranks ({} bytes), this rank expects {}", name, h.size,
        h.total_bytes, size));
  }
  seg->size_ = size;
  seg->slot_bytes_ = h.slot_bytes;
  seg->controls_ = reinterpret_cast<RankControl*>(static_cast<char*>(seg->base_) + sizeof(SegmentHeader));
  seg->data_ = static_cast<char*>(seg->base_) + ControlBytes(size);
  return seg;
}

Status Segment::Attach(int rank, std::chrono::steady_clock::time_point deadline) {
  RankControl& me = controls_[rank];
  if (me.state.load() != kNotAttached) {
    return InvalidArgument(fmt::format("shm segment {}: rank {} attached twice (two ranks with one rank number?)",
                                       name_, rank));
  }
  me.pid.store(static_cast<int32_t>(::getpid()));
  me.state.store(kAttached);
  if (header_->attached.fetch_add(1) + 1 == static_cast<uint32_t>(size_)) Unlink();
  // Set-up happens once per generation: a 1 ms poll costs nothing worth a futex.
  while (header_->attached.load() < static_cast<uint32_t>(size_)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string missing;
      for (int q = 0; q < size_; ++q) {
        if (controls_[q].state.load() == kNotAttached) {
          missing += fmt::format("{}{}", missing.empty() ? "" : ", ", q);
        }
      }
      return DeadlineExceeded(fmt::format("shm segment {}: ranks [{}] never attached", name_, missing));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return OkStatus();
}

void Segment::Unlink() {
  // ENOENT: another rank got there first.
  ::shm_unlink(name_.c_str());
}

void Segment::WakeAll() {
  header_->wake.fetch_add(1);
  if (header_->waiters.load() > 0) {
    ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&header_->wake), FUTEX_WAKE, INT_MAX, nullptr,
              nullptr, 0);
  }
}

void Segment::Park(uint32_t seen, std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) return;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  // Shared (not FUTEX_PRIVATE): the word lives in a mapping other processes share.
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&header_->wake), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

void Segment::WatchPeers(int rank) {
  pidfds_.assign(size_, kNoWatch);
  const int32_t self = static_cast<int32_t>(::getpid());
  for (int q = 0; q < size_; ++q) {
    const int32_t p = pid(q);
    if (q == rank || p == self || p <= 0) continue;
#ifdef SYS_pidfd_open
    const long fd = ::syscall(SYS_pidfd_open, p, 0);
    if (fd >= 0) {
      ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
      pidfds_[q] = static_cast<int>(fd);
    } else if (errno == ESRCH) {
      pidfds_[q] = kGone;
    }
#endif
  }
}

bool Segment::Dead(int peer) const {
  if (pidfds_.empty()) return false;
  const int fd = pidfds_[peer];
  if (fd == kGone) return true;
  if (fd >= 0) {
    // A pidfd turns readable when the process exits, zombie or reaped.
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }
  const int32_t p = controls_[peer].pid.load();
  return p != static_cast<int32_t>(::getpid()) && ExitedByProc(p);
}

}  // namespace shoal::shm

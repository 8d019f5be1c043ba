// NcclCommunicator: unique-id rendezvous, non-blocking init, grouped issue on a private
// stream, and the watchdog that turns a missing peer, an async error or an overrun
// deadline into ncclCommAbort plus a Status, so the trainer can regroup in-process.
#include "collectives/nccl/nccl_communicator.h"

#include <algorithm>
#include <functional>

#include "common/log.h"
#include "common/nvml/local_device.h"

namespace shoal::nccl {
namespace {

using Clock = std::chrono::steady_clock;

size_t ElementSize(DType t) { return t == DType::kF32 ? 4 : 2; }

std::string Ms(std::chrono::milliseconds t) { return std::to_string(t.count()) + " ms"; }

}  // namespace

std::string UniqueIdKey(const std::string& prefix) { return prefix + "/nccl/unique_id"; }

std::string HexEncode(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

StatusOr<std::string> HexDecode(const std::string& hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return DataLoss("nccl unique id: odd-length hex string in the store");
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return DataLoss("nccl unique id: non-hex character in the store's value");
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

NcclCommunicator::NcclCommunicator(const NcclOptions& opts, std::shared_ptr<NcclApi> api)
    : opts_(opts), api_(std::move(api)) {}

StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(const NcclOptions& opts,
                                                                     std::shared_ptr<NcclApi> api) {
  if (opts.size < 1 || opts.rank < 0 || opts.rank >= opts.size) {
    return InvalidArgument("nccl: rank " + std::to_string(opts.rank) + " outside [0, " + std::to_string(opts.size) + ")");
  }
  if (opts.size > 1 && opts.kv == nullptr) {
    return InvalidArgument("nccl: a key-value store is needed to share the unique id between ranks");
  }
  std::unique_ptr<NcclCommunicator> comm(new NcclCommunicator(opts, std::move(api)));
  RETURN_IF_ERROR(comm->Init());
  return comm;
}

Status NcclCommunicator::Init() {
  const auto deadline = Clock::now() + opts_.timeout;
  const int count = api_->DeviceCount();
  if (count <= 0) return Unavailable("nccl backend: no usable CUDA device on this host");
  ASSIGN_OR_RETURN(device_, ChooseLocalDevice(opts_.device, count));
  RETURN_IF_ERROR(api_->SetDevice(device_));

  // Rank 0 mints the id; the others read it under this generation's prefix, so a stale
  // id from an earlier generation can never be picked up.
  std::string id;
  const std::string key = UniqueIdKey(opts_.prefix);
  if (opts_.rank == 0) {
    RETURN_IF_ERROR(api_->GetUniqueId(&id));
    if (opts_.kv != nullptr) RETURN_IF_ERROR(opts_.kv->Set(key, HexEncode(id)));
  } else {
    auto hex = opts_.kv->Get(key, opts_.timeout);
    if (!hex.ok()) {
      return DeadlineExceeded("nccl rank " + std::to_string(opts_.rank) + ": no unique id from rank 0 under '" + key +
                              "' within " + Ms(opts_.timeout) + ": " + hex.status().message());
    }
    ASSIGN_OR_RETURN(id, HexDecode(*hex));
  }
  RETURN_IF_ERROR(api_->StreamCreate(&stream_));
  {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(api_->CommInitRank(opts_.size, id, opts_.rank, &comm_));
  }
  watchdog_ = std::thread([this] { WatchdogLoop(); });
  // Non-blocking init: the call returned at once and the communicator forms once every
  // rank has joined. A rank that never comes leaves it in progress until the deadline.
  return WaitReady(deadline, "forming the NCCL communicator of " + std::to_string(opts_.size) +
                                 " ranks (did a peer never arrive?)");
}

NcclCommunicator::~NcclCommunicator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  std::unique_lock<std::mutex> lock(mu_);
  if (comm_ != nullptr) {
    // Orderly teardown when healthy; a finalize that cannot finish (a dead peer) must
    // not hang the destructor, so it falls back to abort after the build timeout.
    bool clean = api_->CommFinalize(comm_).ok();
    const auto deadline = Clock::now() + opts_.timeout;
    std::string err;
    while (clean) {
      const AsyncState s = api_->CommGetAsyncError(comm_, &err);
      if (s == AsyncState::kReady) break;
      if (s == AsyncState::kError || Clock::now() > deadline) clean = false;
      lock.unlock();
      std::this_thread::sleep_for(opts_.poll_interval);
      lock.lock();
    }
    if (!clean || !api_->CommDestroy(comm_).ok()) api_->CommAbort(comm_);
    comm_ = nullptr;
  }
  for (auto& p : pending_) free_events_.push_back(p.event);
  for (EventHandle e : free_events_) api_->EventDestroy(e);
  if (scratch_ != nullptr) api_->Free(scratch_);
  if (stream_ != nullptr) api_->StreamDestroy(stream_);
}

void NcclCommunicator::AbortLocked(Status reason) {
  if (aborted_) return;
  aborted_ = true;
  abort_status_ = std::move(reason);
  SHOAL_LOG_WARN("nccl rank {}: aborting communicator: {}", opts_.rank, abort_status_.ToString());
  if (comm_ != nullptr) {
    api_->CommAbort(comm_);
    comm_ = nullptr;
  }
  for (auto& p : pending_) free_events_.push_back(p.event);
  pending_.clear();
  cv_.notify_all();
}

void NcclCommunicator::Abort() {
  std::lock_guard<std::mutex> lock(mu_);
  AbortLocked(Aborted("nccl communicator aborted by Abort() (job stopped or regrouping)"));
}

Status NcclCommunicator::abort_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return abort_status_;
}

void NcclCommunicator::WatchdogLoop() {
  // CUDA's current device is per thread; event queries and aborts from here must
  // address the communicator's device, not device 0.
  (void)api_->SetDevice(device_);
  std::unique_lock<std::mutex> lock(mu_);
  while (!quit_) {
    cv_.wait_for(lock, opts_.poll_interval);
    if (quit_ || aborted_ || comm_ == nullptr) continue;
    std::string err;
    if (api_->CommGetAsyncError(comm_, &err) == AsyncState::kError) {
      AbortLocked(Aborted("NCCL reported an asynchronous error: " + err +
                          "; communicator aborted, build a new one to continue"));
      continue;
    }
    // Work on one stream finishes in order, so retiring stops at the first busy op.
    while (!pending_.empty()) {
      auto done = api_->EventDone(pending_.front().event);
      if (!done.ok()) {
        AbortLocked(Aborted(pending_.front().what + " failed on the device: " + done.status().message()));
        break;
      }
      if (!*done) break;
      free_events_.push_back(pending_.front().event);
      pending_.pop_front();
      cv_.notify_all();
    }
    const auto now = Clock::now();
    for (const Pending& p : pending_) {
      if (now > p.deadline) {
        AbortLocked(DeadlineExceeded(p.what + " did not finish by its deadline; aborted the NCCL communicator "
                                              "(a peer died, hung or never called it)"));
        break;
      }
    }
  }
}

Status NcclCommunicator::WaitReady(Clock::time_point deadline, const std::string& what) {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (aborted_) return abort_status_;
      std::string err;
      const AsyncState s = api_->CommGetAsyncError(comm_, &err);
      if (s == AsyncState::kReady) return OkStatus();
      if (s == AsyncState::kError) {
        AbortLocked(Aborted("NCCL error while " + what + ": " + err));
        return abort_status_;
      }
      if (Clock::now() > deadline) {
        AbortLocked(DeadlineExceeded("nccl rank " + std::to_string(opts_.rank) + ": " + what +
                                     " did not complete in time; aborted the communicator"));
        return abort_status_;
      }
    }
    std::this_thread::sleep_for(std::min(opts_.poll_interval, std::chrono::milliseconds(1)));
  }
}

StatusOr<uint64_t> NcclCommunicator::Issue(const std::string& what, std::chrono::milliseconds timeout,
                                           EventHandle after, const std::function<Status()>& group) {
  const auto deadline = Clock::now() + timeout;
  RETURN_IF_ERROR(WaitReady(deadline, what));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return abort_status_;
    Status s = after != nullptr ? api_->StreamWaitEvent(stream_, after) : OkStatus();
    if (s.ok()) s = api_->GroupStart();
    if (s.ok()) {
      s = group();
      // GroupEnd even after a failed call inside, or NCCL's group state stays open.
      const Status end = api_->GroupEnd();
      if (s.ok()) s = end;
    }
    if (!s.ok()) {
      AbortLocked(s.WithContext("issuing " + what));
      return abort_status_;
    }
  }
  // Only once the non-blocking group has been taken does the stream hold its kernels,
  // so the completion event must be recorded after this.
  RETURN_IF_ERROR(WaitReady(deadline, what));
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return abort_status_;
  EventHandle ev = nullptr;
  if (!free_events_.empty()) {
    ev = free_events_.back();
    free_events_.pop_back();
  } else {
    RETURN_IF_ERROR(api_->EventCreate(&ev));
  }
  if (Status s = api_->EventRecord(ev, stream_); !s.ok()) {
    free_events_.push_back(ev);
    return s;
  }
  const uint64_t id = next_id_++;
  pending_.push_back({id, ev, deadline, what + " (timeout " + Ms(timeout) + ")"});
  return id;
}

Status NcclCommunicator::Wait(uint64_t id) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (aborted_) return abort_status_;
    const bool pending = std::any_of(pending_.begin(), pending_.end(), [id](const Pending& p) { return p.id == id; });
    if (!pending) return OkStatus();
    cv_.wait_for(lock, opts_.poll_interval);
  }
}

Status NcclCommunicator::Synchronize() {
  uint64_t last = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return abort_status_;
    if (pending_.empty()) return OkStatus();
    last = pending_.back().id;
  }
  return Wait(last);
}

StatusOr<void*> NcclCommunicator::Scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return scratch_;
  RETURN_IF_ERROR(Synchronize());  // the old buffer may still be in use on the stream
  if (scratch_ != nullptr) api_->Free(scratch_);
  scratch_ = nullptr;
  scratch_bytes_ = 0;
  const size_t grown = std::max(bytes, size_t{1} << 20);
  RETURN_IF_ERROR(api_->Malloc(&scratch_, grown));
  scratch_bytes_ = grown;
  return scratch_;
}

// One collective on `bytes` at `p`: device memory is used in place; host memory is
// copied into scratch on the op's stream before the group (if copy_in), and back once
// the op has finished.
Status NcclCommunicator::RunStaged(const std::string& what, void* p, size_t bytes, bool copy_in,
                                   const CollectiveOptions& opts, const std::function<Status(void*)>& issue) {
  ASSIGN_OR_RETURN(const bool on_device, api_->IsDevicePointer(p));
  void* dev = p;
  if (!on_device) {
    ASSIGN_OR_RETURN(dev, Scratch(bytes));
    if (copy_in) RETURN_IF_ERROR(api_->MemcpyAsync(dev, p, bytes, stream_));
  }
  ASSIGN_OR_RETURN(const uint64_t id, Issue(what, opts.timeout, nullptr, [&] { return issue(dev); }));
  RETURN_IF_ERROR(Wait(id));
  // Copy back only once the op is known to be done: a D2H copy into pageable memory
  // blocks the host, and blocking behind a hung NCCL kernel would defeat the watchdog.
  return on_device ? OkStatus() : api_->Memcpy(p, dev, bytes);
}

Status NcclCommunicator::AllReduce(void* data, size_t count, DType dtype, ReduceOp op, const CollectiveOptions& opts) {
  if (count == 0) return OkStatus();  // collective: every rank passes the same count
  const size_t bytes = count * ElementSize(dtype);
  RETURN_IF_ERROR(RunStaged("nccl allreduce of " + std::to_string(bytes) + " bytes", data, bytes, true, opts,
                            [&](void* dev) { return api_->AllReduce(dev, dev, count, dtype, op, comm_, stream_); }));
  // NCCL does not report traffic; these are its ring algorithm's volumes.
  const int64_t ring = static_cast<int64_t>(2 * (opts_.size - 1) * bytes / opts_.size);
  counters_.sent += ring;
  counters_.received += ring;
  return OkStatus();
}

Status NcclCommunicator::AllGather(const void* send, void* recv, size_t bytes_per_rank, const CollectiveOptions& opts) {
  if (bytes_per_rank == 0) return OkStatus();
  const size_t total = bytes_per_rank * opts_.size;
  ASSIGN_OR_RETURN(const bool send_dev, api_->IsDevicePointer(send));
  ASSIGN_OR_RETURN(const bool recv_dev, api_->IsDevicePointer(recv));
  const std::string what = "nccl allgather of " + std::to_string(bytes_per_rank) + " bytes per rank";
  if (send_dev && recv_dev) {
    ASSIGN_OR_RETURN(const uint64_t id, Issue(what, opts.timeout, nullptr, [&] {
                       return api_->AllGather(send, recv, bytes_per_rank, comm_, stream_);
                     }));
    RETURN_IF_ERROR(Wait(id));
  } else {
    // Stage in place: NCCL's in-place allgather takes send == recv + rank * count.
    ASSIGN_OR_RETURN(void* dev, Scratch(total));
    char* mine = static_cast<char*>(dev) + bytes_per_rank * opts_.rank;
    RETURN_IF_ERROR(api_->MemcpyAsync(mine, send, bytes_per_rank, stream_));
    ASSIGN_OR_RETURN(const uint64_t id, Issue(what, opts.timeout, nullptr, [&] {
                       return api_->AllGather(mine, dev, bytes_per_rank, comm_, stream_);
                     }));
    RETURN_IF_ERROR(Wait(id));
    RETURN_IF_ERROR(api_->Memcpy(recv, dev, total));
  }
  counters_.sent += static_cast<int64_t>((opts_.size - 1) * bytes_per_rank);
  counters_.received += static_cast<int64_t>((opts_.size - 1) * bytes_per_rank);
  return OkStatus();
}

Status NcclCommunicator::Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) {
  if (root < 0 || root >= opts_.size) return InvalidArgument("nccl broadcast: root " + std::to_string(root) + " out of range");
  if (bytes == 0) return OkStatus();
  RETURN_IF_ERROR(RunStaged("nccl broadcast of " + std::to_string(bytes) + " bytes", data, bytes, opts_.rank == root,
                            opts, [&](void* dev) { return api_->Broadcast(dev, dev, bytes, root, comm_, stream_); }));
  // Ring broadcast: every rank but the last in ring order forwards the data once.
  if ((root + opts_.size - 1) % opts_.size != opts_.rank) counters_.sent += static_cast<int64_t>(bytes);
  if (opts_.rank != root) counters_.received += static_cast<int64_t>(bytes);
  return OkStatus();
}

Status NcclCommunicator::Barrier(const CollectiveOptions& opts) {
  ASSIGN_OR_RETURN(void* dev, Scratch(sizeof(float)));
  ASSIGN_OR_RETURN(const uint64_t id, Issue("nccl barrier", opts.timeout, nullptr, [&] {
                     return api_->AllReduce(dev, dev, 1, DType::kF32, ReduceOp::kSum, comm_, stream_);
                   }));
  return Wait(id);
}

Status NcclCommunicator::EnqueueAllReduce(const std::vector<DeviceBucket>& buckets, ReduceOp op, EventHandle after,
                                          const CollectiveOptions& opts) {
  size_t bytes = 0;
  for (const auto& b : buckets) bytes += b.count * ElementSize(b.dtype);
  ASSIGN_OR_RETURN(const uint64_t id,
                   Issue("nccl group of " + std::to_string(buckets.size()) + " bucket allreduces", opts.timeout, after, [&] {
                     for (const auto& b : buckets) {
                       if (b.count == 0) continue;
                       RETURN_IF_ERROR(api_->AllReduce(b.data, b.data, b.count, b.dtype, op, comm_, stream_));
                     }
                     return OkStatus();
                   }));
  (void)id;
  const int64_t ring = static_cast<int64_t>(2 * (opts_.size - 1) * bytes / opts_.size);
  counters_.sent += ring;
  counters_.received += ring;
  return OkStatus();
}

StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const NcclOptions& opts) {
  ASSIGN_OR_RETURN(auto comm, NcclCommunicator::Create(opts, RealNcclApi()));
  return std::unique_ptr<Communicator>(std::move(comm));
}

bool NcclUsable() { return RealNcclApi()->DeviceCount() > 0; }

}  // namespace shoal::nccl

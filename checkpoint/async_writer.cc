// AsyncCheckpointer: two snapshot buffers, one writer thread, and the per-save pipeline
// (WriteShardPieces -> gather -> CommitCheckpoint). The training thread only ever waits
// for a buffer; everything slow happens on the writer thread.
#include "checkpoint/async_writer.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/clock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/stream_copy.h"

namespace shoal {

namespace {
constexpr size_t kCopyChunk = 4 << 20;

struct Chunk {
  char* to;
  const char* from;
  size_t len;
};

void AddChunks(char* dst, const char* src, size_t n, std::vector<Chunk>* chunks) {
  for (size_t off = 0; off < n; off += kCopyChunk) chunks->push_back({dst + off, src + off, std::min(kCopyChunk, n - off)});
}

// The copy is the whole training stall of an asynchronous save, and one core does not
// saturate memory bandwidth, so big copies are split over several threads, each with
// streaming stores (the training thread never reads the snapshot back).
void CopyChunks(const std::vector<Chunk>& chunks) {
  const int threads = chunks.size() < 4 ? 1 : static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t c; (c = next.fetch_add(1)) < chunks.size();) StreamingCopy(chunks[c].to, chunks[c].from, chunks[c].len);
  };
  std::vector<std::thread> helpers;
  for (int t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (auto& t : helpers) t.join();
}
}  // namespace

void AssignBytes(std::string* dst, const void* src, size_t n) {
  dst->resize(n);  // no reallocation once the buffer has been used
  CopyBytes(dst->data(), src, n);
}

void CopyBytes(char* dst, const void* src, size_t n) {
  std::vector<Chunk> chunks;
  AddChunks(dst, static_cast<const char*>(src), n, &chunks);
  CopyChunks(chunks);
}

void CopySnapshotInto(const TrainerSnapshot& src, TrainerSnapshot* dst) {
  dst->job_id = src.job_id;
  dst->step = src.step;
  dst->epoch = src.epoch;
  dst->cursor = src.cursor;
  dst->rng_state = src.rng_state;
  dst->spec_digest = src.spec_digest;
  dst->codec = src.codec;
  dst->world_size = src.world_size;
  std::vector<Chunk> chunks;
  auto copy = [&](const std::vector<NamedTensor>& from, std::vector<NamedTensor>* to) {
    to->resize(from.size());
    for (size_t i = 0; i < from.size(); ++i) {
      const NamedTensor& s = from[i];
      NamedTensor& d = (*to)[i];
      d.name = s.name;
      d.dtype = s.dtype;
      d.shape = s.shape;
      d.bytes.resize(s.bytes.size());  // no reallocation once the buffer has been used
      AddChunks(d.bytes.data(), s.bytes.data(), s.bytes.size(), &chunks);
    }
  };
  copy(src.tensors, &dst->tensors);
  copy(src.rank_tensors, &dst->rank_tensors);
  CopyChunks(chunks);
}

StatusOr<std::unique_ptr<AsyncCheckpointer>> AsyncCheckpointer::Create(AsyncCheckpointerOptions options) {
  if (options.job_dir.empty()) return InvalidArgument("checkpointer needs a job directory");
  if (options.world < 1 || options.rank < 0 || options.rank >= options.world)
    return InvalidArgument("checkpointer: rank " + std::to_string(options.rank) + " of world " +
                           std::to_string(options.world));
  if (options.world > 1 && !options.gather) return InvalidArgument("checkpointer: world > 1 needs a gather function");
  if (options.world > 1 && options.nonce.empty())
    return InvalidArgument("checkpointer: world > 1 needs a nonce shared by all ranks");
  if (options.world == 1) options.is_leader = true;
  if (options.nonce.empty()) options.nonce = RandomNonce();
  for (char c : options.nonce)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_')
      return InvalidArgument("checkpointer: nonce may hold only letters, digits, '-' and '_'");
  if (!options.sign_key_path.empty() && !options.key) {
    ASSIGN_OR_RETURN(KeyPair key, LoadSecretKey(options.sign_key_path));
    options.key = std::move(key);
  }
  if (options.code_version.empty()) options.code_version = CodeVersion();
  if (options.is_leader) {
    RETURN_IF_ERROR(MakeDirs(options.job_dir));
    ASSIGN_OR_RETURN(int removed, CleanStaleStaging(options.job_dir, options.nonce));
    (void)removed;
  }
  std::unique_ptr<AsyncCheckpointer> cp(new AsyncCheckpointer(std::move(options)));
  cp->writer_ = std::thread(&AsyncCheckpointer::WriterLoop, cp.get());
  return cp;
}

AsyncCheckpointer::AsyncCheckpointer(AsyncCheckpointerOptions options)
    : options_(std::move(options)), parent_digest_(options_.parent_digest) {}

AsyncCheckpointer::~AsyncCheckpointer() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

StatusOr<int> AsyncCheckpointer::AcquireSlot() {
  std::unique_lock<std::mutex> l(mu_);
  bool waited = false;
  for (;;) {
    if (stop_) return FailedPrecondition("checkpointer is shutting down");
    for (int i = 0; i < 2; ++i) {
      if (slots_[i].state == SlotState::kFree) {
        slots_[i].state = SlotState::kFilling;
        if (waited) ++stats_.waits;
        return i;
      }
    }
    waited = true;  // both busy: one writing, one queued; wait for the older to finish
    cv_.wait(l);
  }
}

void AsyncCheckpointer::Enqueue(int slot, double stall_s) {
  {
    std::lock_guard<std::mutex> l(mu_);
    slots_[slot].state = SlotState::kQueued;
    queue_.push_back(slot);
    ++stats_.saves;
    stats_.last_stall_s = stall_s;
    stats_.total_stall_s += stall_s;
    stats_.max_stall_s = std::max(stats_.max_stall_s, stall_s);
  }
  cv_.notify_all();
}

Status AsyncCheckpointer::SaveAsync(const TrainerSnapshot& snap) {
  Stopwatch sw;
  RETURN_IF_ERROR(BuildManifest(snap).status().WithContext("checkpoint at step " + std::to_string(snap.step)));
  ASSIGN_OR_RETURN(int slot, AcquireSlot());
  CopySnapshotInto(snap, &slots_[slot].snap);  // the slot is ours alone while kFilling
  Enqueue(slot, sw.Seconds());
  return OkStatus();
}

Status AsyncCheckpointer::SaveAsync(TrainerSnapshot&& snap) {
  Stopwatch sw;
  RETURN_IF_ERROR(BuildManifest(snap).status().WithContext("checkpoint at step " + std::to_string(snap.step)));
  ASSIGN_OR_RETURN(int slot, AcquireSlot());
  slots_[slot].snap = std::move(snap);
  Enqueue(slot, sw.Seconds());
  return OkStatus();
}

Status AsyncCheckpointer::SaveAsyncWith(const std::function<Status(TrainerSnapshot*)>& fill) {
  Stopwatch sw;
  ASSIGN_OR_RETURN(int slot, AcquireSlot());
  TrainerSnapshot* snap = &slots_[slot].snap;
  Status s = fill(snap);
  if (s.ok()) s = BuildManifest(*snap).status().WithContext("checkpoint at step " + std::to_string(snap->step));
  if (!s.ok()) {
    {
      std::lock_guard<std::mutex> l(mu_);
      slots_[slot].state = SlotState::kFree;
    }
    cv_.notify_all();
    return s;
  }
  Enqueue(slot, sw.Seconds());
  return OkStatus();
}

Status AsyncCheckpointer::SaveNow(const TrainerSnapshot& snap) {
  RETURN_IF_ERROR(BuildManifest(snap).status().WithContext("checkpoint at step " + std::to_string(snap.step)));
  Status pending = Wait();
  Status s = WriteOne(snap);
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.completed;
  if (!s.ok()) {
    ++stats_.failed;
    last_error_ = s;
  }
  return s.ok() ? pending : s;
}

void AsyncCheckpointer::Prewarm(std::vector<size_t> tensor_bytes, std::vector<size_t> rank_tensor_bytes) {
  {
    std::lock_guard<std::mutex> l(mu_);
    prewarm_ = PrewarmSizes{std::move(tensor_bytes), std::move(rank_tensor_bytes)};
  }
  cv_.notify_all();
}

Status AsyncCheckpointer::Wait() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] {
    return queue_.empty() && slots_[0].state != SlotState::kWriting && slots_[1].state != SlotState::kWriting;
  });
  Status s = pending_error_;
  pending_error_ = OkStatus();
  return s;
}

Status AsyncCheckpointer::last_error() const {
  std::lock_guard<std::mutex> l(mu_);
  return last_error_;
}

AsyncCheckpointerStats AsyncCheckpointer::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

std::string AsyncCheckpointer::parent_digest() const {
  std::lock_guard<std::mutex> l(mu_);
  return parent_digest_;
}

void AsyncCheckpointer::WriterLoop() {
  // Linux nice values are per thread and inherited by threads this one starts.
  if (options_.writer_nice != 0 &&
      ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), options_.writer_nice) != 0)
    SHOAL_LOG_DEBUG("checkpoint writer: setpriority failed: {}", std::strerror(errno));
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [&] { return stop_ || !queue_.empty() || prewarm_.has_value(); });
    if (prewarm_) {
      const PrewarmSizes sizes = std::move(*prewarm_);
      prewarm_.reset();
      // resize zero-fills: every new page is touched here rather than by the first copy
      // (a buffer already of that size is not touched again).
      auto warm = [](const std::vector<size_t>& bytes, std::vector<NamedTensor>* tensors) {
        tensors->resize(std::max(tensors->size(), bytes.size()));
        for (size_t i = 0; i < bytes.size(); ++i) (*tensors)[i].bytes.resize(bytes[i]);
      };
      for (Slot& slot : slots_) {
        if (stop_ || slot.state != SlotState::kFree) continue;
        slot.state = SlotState::kFilling;  // the slot is ours alone, as a save's fill
        l.unlock();
        warm(sizes.tensors, &slot.snap.tensors);
        warm(sizes.rank_tensors, &slot.snap.rank_tensors);
        l.lock();
        slot.state = SlotState::kFree;
        ++stats_.prewarmed_buffers;
        cv_.notify_all();
      }
      continue;
    }
    if (queue_.empty()) return;  // stop_ and drained
    int slot = queue_.front();
    queue_.pop_front();
    slots_[slot].state = SlotState::kWriting;
    l.unlock();
    Status s = WriteOne(slots_[slot].snap);
    if (!s.ok()) SHOAL_LOG_ERROR("checkpoint at step {} failed: {}", slots_[slot].snap.step, s.ToString());
    l.lock();
    slots_[slot].state = SlotState::kFree;
    ++stats_.completed;
    if (!s.ok()) {
      ++stats_.failed;
      last_error_ = s;
      if (pending_error_.ok()) pending_error_ = s;
    }
    cv_.notify_all();
  }
}

Status AsyncCheckpointer::WriteOne(const TrainerSnapshot& snap) {
  std::lock_guard<std::mutex> w(write_mu_);
  Stopwatch sw;
  const AsyncCheckpointerOptions& o = options_;
  ASSIGN_OR_RETURN(CheckpointManifest m, BuildManifest(snap));
  m.set_parent_digest(parent_digest());
  m.set_code_version(o.code_version);
  m.set_lineage_digest(o.lineage_digest);
  if (m.spec_digest().empty()) m.set_spec_digest(o.spec_digest);
  for (const auto& [k, v] : o.dependency_versions) (*m.mutable_dependency_versions())[k] = v;

  const std::string staging = StagingPath(o.job_dir, snap.step, o.nonce);
  const uint64_t total = TotalBytes(snap);
  std::vector<ShardInfo> all;
  Status mine;
  if (o.world == 1) {
    // One process owns all the state: several shards written at once hash on several
    // cores, which is what keeps a save near the disk's write speed.
    int n = o.local_shards > 0 ? o.local_shards
            : total >= kParallelShardBytes ? static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u)) : 1;
    std::vector<StatusOr<ShardInfo>> infos(n, Internal("not written"));
    std::optional<StatusOr<CheckpointRankState>> rank_state;
    auto write = [&](int i) { infos[i] = WriteShardPieces(staging, i, n, ViewRange(snap, SliceForRank(total, i, n))); };
    std::vector<std::thread> helpers;
    for (int i = 1; i < n; ++i) helpers.emplace_back(write, i);
    if (!snap.rank_tensors.empty())
      helpers.emplace_back([&] { rank_state = WriteRankState(staging, 0, 1, snap.rank_tensors); });
    write(0);
    for (auto& t : helpers) t.join();
    for (auto& info : infos) {
      if (!info.ok() && mine.ok()) mine = info.status();
      if (info.ok()) all.push_back(*info);
    }
    if (rank_state && !rank_state->ok() && mine.ok()) mine = rank_state->status();
    if (rank_state && mine.ok()) all[0].rank_state = **rank_state;
  } else {
    StatusOr<ShardInfo> info = WriteShardPieces(staging, o.rank, o.world, ViewRange(snap, SliceForRank(total, o.rank, o.world)));
    if (info.ok() && !snap.rank_tensors.empty()) {
      StatusOr<CheckpointRankState> rank_state = WriteRankState(staging, o.rank, o.world, snap.rank_tensors);
      if (rank_state.ok()) info->rank_state = *rank_state;
      else info = rank_state.status();
    }
    mine = info.status();
    ShardInfo sent = info.ok() ? *info : ShardInfo{staging, o.rank, o.world, ShardFileName(o.rank, o.world), 0, "",
                                                   info.status().ToString(), std::nullopt};
    StatusOr<std::vector<ShardInfo>> gathered = o.gather(sent);
    if (!gathered.ok()) return gathered.status().WithContext("gathering shard infos for step " + std::to_string(snap.step));
    all = std::move(gathered).value();
  }
  Status s = mine;
  CommitInfo info;
  if (s.ok() && o.is_leader) {
    s = CommitCheckpoint(o.job_dir, snap.step, m, all, o.key ? &*o.key : nullptr, o.retention, &info);
    info.parent_digest = m.parent_digest();
    info.lineage_digest = m.lineage_digest();
  }
  if (!s.ok()) {
    // Nothing under a committed name was touched; drop the half-written staging dir.
    if (o.is_leader) {
      std::error_code ec;
      std::filesystem::remove_all(staging, ec);
    }
    return s;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    stats_.last_write_s = sw.Seconds();
    if (o.is_leader) parent_digest_ = info.manifest_digest;
  }
  if (o.is_leader && o.on_commit) {
    try {
      o.on_commit(info);
    } catch (const std::exception& e) {
      SHOAL_LOG_ERROR("checkpoint commit callback threw: {}", e.what());
    }
  }
  return OkStatus();
}

}  // namespace shoal

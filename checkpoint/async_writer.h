// AsyncCheckpointer: the trainer copies its state into one of two host buffers and goes
// on; a writer thread writes this rank's shard (hashing while writing), gathers the other
// ranks' shard infos, and on the leader signs and commits. Training stalls only for the
// copy, or, when both buffers are still busy, until the older save finishes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "checkpoint/format.h"
#include "checkpoint/job_dir.h"
#include "checkpoint/writer.h"
#include "common/signing.h"
#include "common/status.h"

namespace shoal {

// Allgather of ShardInfo over the worker's communicator (EncodeShardInfo/DecodeShardInfo
// turn one into bytes). Every rank calls it once per save, in save order, even when its
// own write failed (ShardInfo::error set), so no rank is left waiting. It must time out
// (the communicator's options) when a rank is gone: the destructor waits for it.
using GatherShardsFn = std::function<StatusOr<std::vector<ShardInfo>>(const ShardInfo&)>;
// Runs on the writer thread of the leader after each commit (e.g. to tell the
// coordinator's checkpoint registry). Must not call back into the checkpointer.
using CommitCallback = std::function<void(const CommitInfo&)>;

struct AsyncCheckpointerOptions {
  std::string job_dir;             // <checkpoint.dir>/<job>
  std::optional<KeyPair> key;      // signs manifests; none: unsigned checkpoints
  std::string sign_key_path;       // or: a secret key file, loaded by Create (mode 0600 enforced)
  RetentionPolicy retention;
  int rank = 0;
  int world = 1;
  bool is_leader = true;           // commits (rank 0)
  GatherShardsFn gather;           // required when world > 1
  // Names the staging directories (step-N.tmp-<nonce>). World 1: random when empty.
  // World > 1: required and equal on every rank, and unique per run (e.g. the job id and
  // membership generation), because the leader removes staging dirs of other nonces.
  std::string nonce;
  std::string parent_digest;       // manifest digest this run resumed from ("" for none)
  std::string code_version;        // default CodeVersion()
  std::map<std::string, std::string> dependency_versions;  // merged with LinkedDependencyVersions()
  // The job's lineage chain head for the generation saving (lineage/digest.h): signed
  // with the manifest, it is what `shoalctl lineage verify` checks the store against.
  std::string lineage_digest;
  std::string spec_digest;         // used when the snapshot carries none
  CommitCallback on_commit;
  // World 1 only: write the state as this many shard files at once, so hashing runs on
  // that many cores. 0: min(4, cores) for states of kParallelShardBytes or more, else 1.
  int local_shards = 0;
  // Nice value of the writer thread (and the shard/hash threads it starts), so that the
  // training threads win the cores while a save runs in the background. 0: unchanged.
  int writer_nice = 10;
};

inline constexpr uint64_t kParallelShardBytes = 64ull << 20;

struct AsyncCheckpointerStats {
  int64_t saves = 0;          // SaveAsync calls accepted
  int64_t completed = 0;      // writes finished (committed on the leader), ok or not
  int64_t failed = 0;
  int64_t waits = 0;          // SaveAsync calls that found both buffers busy
  double last_stall_s = 0;    // time the last SaveAsync blocked the caller
  double max_stall_s = 0;
  double total_stall_s = 0;
  double last_write_s = 0;    // writer-thread time of the last save
  int prewarmed_buffers = 0;  // buffers Prewarm has sized and faulted in (0-2 per call)
};

class AsyncCheckpointer {
 public:
  // Validates the options, loads the key, and (leader) removes leftovers of crashed
  // writers in job_dir (CleanStaleStaging) before starting the writer thread.
  static StatusOr<std::unique_ptr<AsyncCheckpointer>> Create(AsyncCheckpointerOptions options);
  ~AsyncCheckpointer();  // finishes queued saves, then stops the thread
  AsyncCheckpointer(const AsyncCheckpointer&) = delete;
  AsyncCheckpointer& operator=(const AsyncCheckpointer&) = delete;

  // Copies `snap` into a free buffer (reusing its allocation, so no page faults after the
  // first two saves, or none at all after Prewarm) and queues it. Blocks only while both
  // buffers are busy. Invalid snapshots are refused here; write errors surface in Wait()
  // and last_error().
  Status SaveAsync(const TrainerSnapshot& snap);
  // Same, moving instead of copying (the caller built a throwaway snapshot).
  Status SaveAsync(TrainerSnapshot&& snap);
  // The one-copy path for a trainer whose state lives in its own buffers: reserves a
  // free buffer and lets `fill` write the state straight into it (AssignBytes reuses
  // its allocation and copies on several threads). The buffer still holds an earlier
  // save: fill sets every field and resizes `tensors`. A fill error frees the buffer.
  Status SaveAsyncWith(const std::function<Status(TrainerSnapshot*)>& fill);
  // Sizes both buffers for tensors and rank_tensors of these byte lengths (in snapshot
  // order) and touches their pages, on the writer thread, so that the first saves do not
  // page-fault on the training thread (a 256 MiB buffer's first fill measured 0.26 s,
  // more than a whole synchronous save). Buffers already that size are left alone, so
  // calling again when a size grows (a codec's state, once buckets have passed) costs
  // only the growth. Returns at once; a save that comes first takes whichever buffer is
  // free, warm or not.
  void Prewarm(std::vector<size_t> tensor_bytes, std::vector<size_t> rank_tensor_bytes = {});
  // Waits for queued saves, then writes `snap` on the calling thread (end of training).
  Status SaveNow(const TrainerSnapshot& snap);
  // Blocks until every queued save is done; returns the first error since the last Wait.
  Status Wait();
  // The most recent write error (OK if none ever happened).
  Status last_error() const;
  AsyncCheckpointerStats stats() const;
  // Manifest digest of the last commit (or options.parent_digest): the next one's parent.
  std::string parent_digest() const;

 private:
  enum class SlotState { kFree, kFilling, kQueued, kWriting };
  struct Slot {
    TrainerSnapshot snap;
    SlotState state = SlotState::kFree;
  };

  explicit AsyncCheckpointer(AsyncCheckpointerOptions options);
  // Reserves a free slot, waiting (and counting the stall) while both are busy.
  StatusOr<int> AcquireSlot();
  void Enqueue(int slot, double stall_s);
  void WriterLoop();
  // The whole save of one snapshot: shard, gather, commit (leader). Holds write_mu_.
  Status WriteOne(const TrainerSnapshot& snap);

  AsyncCheckpointerOptions options_;
  std::string parent_digest_;  // guarded by write_mu_ (writes), mu_ (reads)
  std::mutex write_mu_;        // one save at a time: writer thread or SaveNow
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Slot slots_[2];
  std::deque<int> queue_;
  struct PrewarmSizes {
    std::vector<size_t> tensors, rank_tensors;
  };
  std::optional<PrewarmSizes> prewarm_;  // sizes for the writer thread to fault in
  bool stop_ = false;
  Status last_error_;
  Status pending_error_;
  AsyncCheckpointerStats stats_;
  std::thread writer_;  // last: started after everything it uses exists
};

// Copies `src` into `dst`, reusing dst's string and vector capacity; big tensors are
// copied by several threads.
void CopySnapshotInto(const TrainerSnapshot& src, TrainerSnapshot* dst);
// dst = n bytes at src, the same way (for SaveAsyncWith fills).
void AssignBytes(std::string* dst, const void* src, size_t n);
// n bytes from src to dst (not overlapping), the same way.
void CopyBytes(char* dst, const void* src, size_t n);

}  // namespace shoal

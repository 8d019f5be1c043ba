// The training loader: opens a dataset only after its signature and every shard digest
// check out, reads only admitted records, orders each epoch with EpochPermutation, cuts
// each step's global batch with RankSpan, and prefetches batches on its own thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "datapipe/idx.h"
#include "datapipe/manifest.h"
#include "jobspec.pb.h"

namespace shoal {

struct LoaderOptions {
  DatasetTrust trust;            // keys that may sign the manifest; allow_unsigned
  bool require_scan = false;     // refuse a dataset with no scan (otherwise: all records)
  int64_t global_batch = 256;    // samples per step across all ranks
  uint64_t seed = 0;             // epoch order = EpochPermutation(admitted, seed, epoch)
  int prefetch_batches = 4;      // queue bound; 0 builds each batch inside Next()
  int rank = 0, world = 1;
  int64_t epoch = 0, cursor = 0; // position of the first step (a resume point)
};

// Loads data.trust key files and data.allow_unsigned from a job spec.
StatusOr<DatasetTrust> TrustFromSpec(const DataSpec& spec);

// One rank's share of one step.
struct LoaderBatch {
  int64_t epoch = 0;
  int64_t cursor = 0;        // global cursor at the start of the step
  int64_t step_samples = 0;  // samples the step consumes over all ranks
  int rank = 0, world = 1;
  int n = 0, dim = 0;        // this rank's rows (0 is possible at an epoch's tail)
  std::vector<float> x;      // n x dim, u8 features scaled to [0, 1]
  std::vector<int32_t> y;
  std::vector<int64_t> record_ids;  // global ids, for the ledger
};

struct LoaderStats {
  int64_t batches = 0;
  double wait_seconds = 0;       // time Next() spent blocked on the prefetch queue
  double last_wait_seconds = 0;
  double build_seconds = 0;      // time spent assembling batches (either thread)
};

class Loader {
 public:
  static StatusOr<std::unique_ptr<Loader>> Open(const std::string& dir, const LoaderOptions& options);
  ~Loader();  // stops and joins the prefetch thread
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // This rank's batch for the step at (epoch(), cursor()), then advances past the step
  // (to the next epoch after its last step). Blocks until the batch is ready.
  StatusOr<LoaderBatch> Next();

  // Takes effect at the next step Next() returns; prefetched batches cut for the old
  // world are dropped. Errors on rank outside [0, world). global_batch > 0 also
  // changes the samples per step (an elastic job that keeps the per-worker batch).
  Status SetWorld(int rank, int world, int64_t global_batch = 0);
  // Moves to a saved position (a checkpoint's epoch and cursor). cursor may equal
  // size(), meaning the start of the next epoch.
  Status Seek(int64_t epoch, int64_t cursor);

  int64_t epoch() const;
  int64_t cursor() const;
  int64_t size() const { return static_cast<int64_t>(locs_.size()); }  // admitted records
  int64_t quarantined() const { return total_records_ - size(); }
  int64_t total_records() const { return total_records_; }
  int64_t steps_per_epoch() const;
  int dim() const { return dim_; }
  int num_classes() const { return num_classes_; }
  bool scanned() const { return scanned_; }
  const std::string& dataset_name() const { return name_; }
  const std::string& manifest_sha256() const { return manifest_sha256_; }
  const std::string& provenance() const { return provenance_; }
  LoaderStats stats() const;

 private:
  struct Loc {
    int32_t shard;
    int64_t index;
  };
  struct Item {
    uint64_t generation;
    LoaderBatch batch;
  };
  Loader() = default;
  // Builds the batch of the step at (epoch, cursor) for (rank, world).
  LoaderBatch Build(int64_t epoch, int64_t cursor, int rank, int world, int64_t global_batch);
  void ProducerLoop();
  // Resets the producer to the consumer's position under mu_ (world or seek changed).
  void RestartLocked();

  std::vector<ShardView> shards_;
  std::vector<Loc> locs_;  // admitted records, in record-id order
  int64_t total_records_ = 0;
  int dim_ = 0, num_classes_ = 0;
  bool scanned_ = false;
  std::string name_, manifest_sha256_, provenance_;
  uint64_t seed_ = 0;
  size_t prefetch_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  int rank_ = 0, world_ = 1;
  int64_t global_batch_ = 1;
  int64_t epoch_ = 0, cursor_ = 0;            // consumer: the next step Next() returns
  int64_t prod_epoch_ = 0, prod_cursor_ = 0;  // producer: the next step it builds
  uint64_t generation_ = 0;
  std::deque<Item> queue_;
  bool stop_ = false;
  LoaderStats stats_;
  // The producer's cached epoch order (only the producer touches it, or Next() when
  // prefetch is off).
  int64_t perm_epoch_ = -1;
  std::vector<uint32_t> perm_;
  std::thread producer_;
};

// All admitted records of a dataset (all records if it was never scanned) in record-id
// order, after the same provenance checks as Loader::Open: for evaluation sets.
StatusOr<InMemoryDataset> LoadAdmittedInMemory(const std::string& dir, const TrustStore& trust, bool allow_unsigned);

}  // namespace shoal

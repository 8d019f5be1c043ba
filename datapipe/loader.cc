// Loader internals. One producer thread builds batches ahead of the trainer into a
// bounded queue. Every batch is tagged with a generation; SetWorld and Seek bump it and
// rewind the producer to the consumer's position, so a batch cut for an old world size
// or position is never handed out, and nothing is skipped or repeated.
#include "datapipe/loader.h"

#include <algorithm>

#include "common/clock.h"
#include "datapipe/partition.h"
#include "datapipe/review.h"
#include "datapipe/scan_files.h"

namespace shoal {

StatusOr<DatasetTrust> TrustFromSpec(const DataSpec& spec) {
  DatasetTrust t;
  t.allow_unsigned = spec.allow_unsigned();
  for (const auto& path : spec.trust()) {
    Status s = t.trust.AddFile(path);
    if (!s.ok()) return s.WithContext("data.trust " + path);
  }
  return t;
}

namespace {
struct Admitted {
  std::vector<int64_t> ids;
  bool scanned = false;
};

// The admitted ids: the scan's, if it matches this manifest; all ids if there is no scan
// and one is not required. A stale or damaged scan is an error, not a silent fallback.
// A signed review overlay (review.h) then releases or confirms records; one that does not
// verify against `trust` refuses the dataset rather than being ignored.
StatusOr<Admitted> AdmittedIds(const std::string& dir, const VerifiedDataset& ds, bool require_scan,
                               const TrustStore& trust) {
  Admitted out;
  auto idx = ReadAdmitted(dir);
  if (idx.ok()) {
    if (idx->manifest_sha256 != ds.manifest_sha256 || idx->total_records != ds.total_records())
      return FailedPrecondition("the scan in " + dir + "/" + kScanDir +
                                " was made for a different manifest (stale); re-run `shoalctl data scan " + dir + "`");
    out.ids = std::move(idx->ids);
    out.scanned = true;
    auto review = ReadReview(dir, trust);
    if (review.ok()) {
      auto applied = ApplyReview(out.ids, *review, ds.total_records(), ds.manifest_sha256);
      if (!applied.ok()) return applied.status().WithContext("review overlay " + ReviewPath(dir));
      out.ids = std::move(*applied);
    } else if (review.status().code() != StatusCode::kNotFound) {
      return review.status();
    }
    return out;
  }
  if (idx.status().code() != StatusCode::kNotFound) return idx.status();
  if (require_scan) return idx.status();
  out.ids.resize(ds.total_records());
  for (int64_t i = 0; i < ds.total_records(); ++i) out.ids[i] = i;
  return out;
}
}  // namespace

StatusOr<std::unique_ptr<Loader>> Loader::Open(const std::string& dir, const LoaderOptions& o) {
  if (o.global_batch <= 0) return InvalidArgument("loader global batch must be positive");
  if (o.world <= 0 || o.rank < 0 || o.rank >= o.world)
    return InvalidArgument("loader rank " + std::to_string(o.rank) + " is outside world " + std::to_string(o.world));
  if (o.prefetch_batches < 0 || o.prefetch_batches > 1024) return InvalidArgument("prefetch_batches must be in [0, 1024]");
  ASSIGN_OR_RETURN(VerifiedDataset ds, OpenDataset(dir, o.trust));
  ASSIGN_OR_RETURN(Admitted admitted, AdmittedIds(dir, ds, o.require_scan, o.trust.trust));
  if (admitted.ids.empty()) return FailedPrecondition("dataset " + dir + " has no admitted records");

  std::unique_ptr<Loader> l(new Loader());
  l->shards_ = std::move(ds.shards);
  l->total_records_ = ds.total_records();
  l->dim_ = static_cast<int>(l->shards_.front().layout().feature_count);
  l->num_classes_ = ds.manifest.schema().num_classes();
  l->scanned_ = admitted.scanned;
  l->name_ = ds.manifest.name();
  l->manifest_sha256_ = ds.manifest_sha256;
  l->provenance_ = ds.provenance;
  l->global_batch_ = o.global_batch;
  l->seed_ = o.seed;
  l->prefetch_ = static_cast<size_t>(o.prefetch_batches);
  // Record id -> (shard, index): shards hold contiguous id ranges in manifest order.
  std::vector<int64_t> firsts;
  for (const auto& s : l->shards_) firsts.push_back(s.first_record_id());
  l->locs_.reserve(admitted.ids.size());
  for (int64_t id : admitted.ids) {
    size_t s = std::upper_bound(firsts.begin(), firsts.end(), id) - firsts.begin() - 1;
    l->locs_.push_back({static_cast<int32_t>(s), id - firsts[s]});
  }
  l->rank_ = o.rank;
  l->world_ = o.world;
  RETURN_IF_ERROR(l->Seek(o.epoch, o.cursor));
  if (l->prefetch_ > 0) l->producer_ = std::thread([p = l.get()] { p->ProducerLoop(); });
  return l;
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (producer_.joinable()) producer_.join();
}

int64_t Loader::epoch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return epoch_;
}
int64_t Loader::cursor() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cursor_;
}
int64_t Loader::steps_per_epoch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return StepsPerEpoch(size(), global_batch_);
}
LoaderStats Loader::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Loader::RestartLocked() {
  ++generation_;
  queue_.clear();
  prod_epoch_ = epoch_;
  prod_cursor_ = cursor_;
  cv_.notify_all();
}

Status Loader::SetWorld(int rank, int world, int64_t global_batch) {
  if (world <= 0 || rank < 0 || rank >= world)
    return InvalidArgument("rank " + std::to_string(rank) + " is outside world " + std::to_string(world));
  std::lock_guard<std::mutex> lock(mu_);
  if (global_batch <= 0) global_batch = global_batch_;
  if (rank == rank_ && world == world_ && global_batch == global_batch_) return OkStatus();
  rank_ = rank;
  world_ = world;
  global_batch_ = global_batch;
  RestartLocked();
  return OkStatus();
}

Status Loader::Seek(int64_t epoch, int64_t cursor) {
  if (epoch < 0 || cursor < 0 || cursor > size())
    return InvalidArgument("loader position (epoch " + std::to_string(epoch) + ", cursor " + std::to_string(cursor) +
                           ") is outside [0, " + std::to_string(size()) + "]");
  std::lock_guard<std::mutex> lock(mu_);
  // A cursor at the end of an epoch is the start of the next one.
  epoch_ = cursor == size() ? epoch + 1 : epoch;
  cursor_ = cursor == size() ? 0 : cursor;
  RestartLocked();
  return OkStatus();
}

LoaderBatch Loader::Build(int64_t epoch, int64_t cursor, int rank, int world, int64_t global_batch) {
  Stopwatch w;
  const int64_t n = size();
  if (perm_epoch_ != epoch) {
    perm_ = EpochPermutation(static_cast<uint64_t>(n), seed_, epoch);
    perm_epoch_ = epoch;
  }
  Span span = RankSpan(cursor, n, global_batch, rank, world);
  LoaderBatch b;
  b.epoch = epoch;
  b.cursor = cursor;
  b.step_samples = StepSamples(cursor, n, global_batch);
  b.rank = rank;
  b.world = world;
  b.n = static_cast<int>(span.size());
  b.dim = dim_;
  b.x.resize(static_cast<size_t>(b.n) * dim_);
  b.y.resize(b.n);
  b.record_ids.resize(b.n);
  for (int64_t i = 0; i < span.size(); ++i) {
    const Loc& loc = locs_[perm_[span.begin + i]];
    const ShardView& s = shards_[loc.shard];
    s.ReadFeatures(loc.index, b.x.data() + i * dim_);
    b.y[i] = s.label(loc.index);
    b.record_ids[i] = s.first_record_id() + loc.index;
  }
  double secs = w.Seconds();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.build_seconds += secs;
  return b;
}

void Loader::ProducerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || queue_.size() < prefetch_; });
    if (stop_) return;
    const uint64_t gen = generation_;
    const int64_t epoch = prod_epoch_, cursor = prod_cursor_;
    const int rank = rank_, world = world_;
    const int64_t global_batch = global_batch_;
    lock.unlock();
    LoaderBatch b = Build(epoch, cursor, rank, world, global_batch);
    lock.lock();
    if (gen != generation_) continue;  // world or position changed while building
    queue_.push_back(Item{gen, std::move(b)});
    prod_cursor_ = cursor + StepSamples(cursor, size(), global_batch_);
    if (prod_cursor_ >= size()) prod_epoch_ = epoch + 1, prod_cursor_ = 0;
    cv_.notify_all();
  }
}

StatusOr<LoaderBatch> Loader::Next() {
  LoaderBatch b;
  std::unique_lock<std::mutex> lock(mu_);
  if (prefetch_ == 0) {
    const int64_t epoch = epoch_, cursor = cursor_;
    const int rank = rank_, world = world_;
    const int64_t global_batch = global_batch_;
    const uint64_t gen = generation_;
    lock.unlock();
    b = Build(epoch, cursor, rank, world, global_batch);
    lock.lock();
    // SetWorld or Seek from another thread while building: rebuild for the new state.
    if (gen != generation_) {
      lock.unlock();
      return Next();
    }
  } else {
    Stopwatch w;
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return Cancelled("loader is shutting down");
    b = std::move(queue_.front().batch);
    queue_.pop_front();
    double waited = w.Seconds();
    stats_.wait_seconds += waited;
    stats_.last_wait_seconds = waited;
    cv_.notify_all();
  }
  // Advance past this step in the same critical section as the pop, so a SetWorld or
  // Seek racing with Next() rewinds the producer to a position after this batch. The
  // queue only ever holds the current generation (RestartLocked clears it and the
  // producer re-checks the generation before pushing), so b is the step at cursor_.
  cursor_ = b.cursor + b.step_samples;
  epoch_ = b.epoch;
  if (cursor_ >= size()) ++epoch_, cursor_ = 0;
  ++stats_.batches;
  return b;
}

StatusOr<InMemoryDataset> LoadAdmittedInMemory(const std::string& dir, const TrustStore& trust, bool allow_unsigned) {
  DatasetTrust t{trust, allow_unsigned};
  ASSIGN_OR_RETURN(VerifiedDataset ds, OpenDataset(dir, t));
  ASSIGN_OR_RETURN(Admitted admitted, AdmittedIds(dir, ds, /*require_scan=*/false, trust));
  InMemoryDataset out;
  out.n = static_cast<int64_t>(admitted.ids.size());
  out.dim = static_cast<int>(ds.shards.empty() ? 0 : ds.shards.front().layout().feature_count);
  out.num_classes = ds.manifest.schema().num_classes();
  out.x.resize(static_cast<size_t>(out.n) * out.dim);
  out.y.resize(out.n);
  size_t s = 0;
  for (int64_t i = 0; i < out.n; ++i) {
    int64_t id = admitted.ids[i];
    while (s + 1 < ds.shards.size() && ds.shards[s + 1].first_record_id() <= id) ++s;  // ids ascend
    const ShardView& sh = ds.shards[s];
    sh.ReadFeatures(id - sh.first_record_id(), out.x.data() + i * out.dim);
    out.y[i] = sh.label(id - sh.first_record_id());
  }
  return out;
}

}  // namespace shoal

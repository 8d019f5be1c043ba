// The error-feedback base class (validation, statistics, state commit, the versioned
// checkpoint format of residuals and Q) and MakeCodec, which checks options and picks
// the codec by name.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <exception>

#include "collectives/compression/codec_internal.h"
#include "common/clock.h"

namespace shoal {
namespace compression {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the codec state format is little-endian; add byte swapping for this host");

constexpr char kMagic[4] = {'S', 'H', 'C', 'S'};
constexpr uint32_t kVersion = 2;  // version 1 (byte-wise FNV-1a checksum) still loads

uint64_t Fnv1a(const char* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(data[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

// Version 2's checksum: FNV-1a's step (h = (h ^ x) * prime) on little-endian 64-bit
// words in four interleaved lanes, word i in lane i % 4, over the whole 32-byte groups;
// the remaining bytes go byte by byte into lane 0; then h = lane 0, and for lanes 1-3
// h = (h ^ lane) * prime. Byte-wise FNV-1a is one chain of dependent multiplies per
// byte: 30 ms over a 23 MB residual, on the training thread at every checkpoint. Each
// step is a bijection of h, so any change confined to one word is always detected.
uint64_t LaneFnv(const char* data, size_t n) {
  constexpr uint64_t kBasis = 0xcbf29ce484222325ull, kPrime = 0x100000001b3ull;
  uint64_t lane[4] = {kBasis, kBasis, kBasis, kBasis};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, data + i + 8 * k, 8);
      lane[k] = (lane[k] ^ w) * kPrime;
    }
  }
  for (; i < n; ++i) lane[0] = (lane[0] ^ static_cast<uint8_t>(data[i])) * kPrime;
  uint64_t h = lane[0];
  for (int k = 1; k < 4; ++k) h = (h ^ lane[k]) * kPrime;
  return h;
}

uint64_t StateChecksum(uint32_t version, const char* data, size_t n) {
  return version == 1 ? Fnv1a(data, n) : LaneFnv(data, n);
}

// Bounds-checked reads over the state bytes; every failure names what was cut off.
class Reader {
 public:
  Reader(const std::string& s, size_t end) : s_(s), end_(end) {}
  template <typename T>
  bool Get(T* v) {
    if (end_ - at_ < sizeof(T)) return false;
    std::memcpy(v, s_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  bool GetBytes(void* dst, size_t n) {
    if (end_ - at_ < n) return false;
    std::memcpy(dst, s_.data() + at_, n);
    at_ += n;
    return true;
  }
  size_t left() const { return end_ - at_; }

 private:
  const std::string& s_;
  size_t end_;
  size_t at_ = 0;
};

// The communicator as a codec sees it: every call forwarded, and the calling thread's
// CPU time inside the calls summed, so that Reduce can charge the codec only for its
// own work. (A backend may spend CPU on the calling thread, as MPI's polling and
// Gloo's ring reductions do; that is communication, not codec compute.)
class CpuClockedComm final : public Communicator {
 public:
  explicit CpuClockedComm(Communicator* inner) : inner_(inner) {}
  double seconds() const { return seconds_; }

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend(); }
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op, const CollectiveOptions& opts) override {
    return Clocked([&] { return inner_->AllReduce(data, count, dtype, op, opts); });
  }
  Status AllGather(const void* send, void* recv, size_t bytes_per_rank, const CollectiveOptions& opts) override {
    return Clocked([&] { return inner_->AllGather(send, recv, bytes_per_rank, opts); });
  }
  Status AllToAll(const void* send, void* recv, size_t bytes_per_rank, const CollectiveOptions& opts) override {
    return Clocked([&] { return inner_->AllToAll(send, recv, bytes_per_rank, opts); });
  }
  Status Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) override {
    return Clocked([&] { return inner_->Broadcast(data, bytes, root, opts); });
  }
  Status Barrier(const CollectiveOptions& opts) override {
    return Clocked([&] { return inner_->Barrier(opts); });
  }
  void Abort() override { inner_->Abort(); }
  bool concurrent_tags() const override { return inner_->concurrent_tags(); }

 private:
  template <typename F>
  Status Clocked(F&& call) {
    const double t0 = ThreadCpuSeconds();
    Status s = call();
    seconds_ += ThreadCpuSeconds() - t0;
    return s;
  }

  Communicator* inner_;
  double seconds_ = 0;  // one Reduce, one thread
};

}  // namespace

float NormalAt(uint64_t key, uint64_t i) {
  // 1 - u keeps the logarithm's argument in (0, 1].
  const float u1 = 1.0f - UniformAt(key, 2 * i);
  const float u2 = UniformAt(key, 2 * i + 1);
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.28318530718f * u2);
}

Status FeedbackCodec::Reduce(float* bucket, size_t count, const std::vector<TensorSlice>& tensors,
                             uint64_t bucket_id, int64_t step, Communicator* comm,
                             const CollectiveOptions& opts) {
  if (comm == nullptr) return InvalidArgument("codec " + name() + ": communicator is null");
  // All of it but the communicator's calls is the codec's compute, failed reductions
  // included.
  CpuClockedComm clocked(comm);
  const double cpu0 = ThreadCpuSeconds();
  Status s = ReduceAndCommit(bucket, count, tensors, bucket_id, step, &clocked, opts);
  AddComputeSeconds(ThreadCpuSeconds() - cpu0 - clocked.seconds());
  return s;
}

Status FeedbackCodec::ReduceAndCommit(float* bucket, size_t count, const std::vector<TensorSlice>& tensors,
                                      uint64_t bucket_id, int64_t step, Communicator* comm,
                                      const CollectiveOptions& opts) {
  if (count > 0 && bucket == nullptr) return InvalidArgument("codec " + name() + ": bucket is null");
  // The layout must stay inside the bucket and tensors must not overlap: PowerSGD
  // rewrites each tensor separately, and overlap would count elements twice.
  std::vector<TensorSlice> layout = tensors;
  if (layout.empty()) layout.push_back(TensorSlice{"bucket", 0, size_t{1}, count});
  std::vector<std::pair<size_t, size_t>> spans;
  for (const TensorSlice& t : layout) {
    if (t.offset > count || t.numel() > count - t.offset) {
      return InvalidArgument("codec " + name() + ": tensor '" + t.name + "' (offset " +
                             std::to_string(t.offset) + ", " + std::to_string(t.numel()) +
                             " floats) lies outside the bucket of " + std::to_string(count));
    }
    if (t.numel() > 0) spans.emplace_back(t.offset, t.offset + t.numel());
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) {
      return InvalidArgument("codec " + name() + ": tensors overlap in bucket " +
                             std::to_string(bucket_id));
    }
  }

  // A reentrant codec's DoReduce touches no shared state: only its commit is locked,
  // so several buckets can be on the wire at once.
  std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
  if (!reentrant()) lock.lock();
  Update update;
  // Nothing may throw out of a codec: allocation failure on a huge bucket becomes a
  // status the worker can report.
  Status status;
  try {
    status = DoReduce(bucket, count, layout, bucket_id, step, comm, opts, &update);
  } catch (const std::exception& e) {
    status = Internal("codec " + name() + ": " + e.what());
  }
  RETURN_IF_ERROR(status);
  if (!lock.owns_lock()) lock.lock();
  for (const StateKey& key : update.erase) {
    auto it = state_.find(key);
    if (it == state_.end()) continue;
    GiveBack(std::move(it->second));
    state_.erase(it);
  }
  for (auto& [key, value] : update.set) {
    if (!update.state_finite && (key.kind == StateKind::kResidual || key.kind == StateKind::kMomentum)) {
      // A non-finite gradient element (inf/NaN) ruins this step's output anyway; it is
      // not carried over, or every later step of the bucket would be ruined as well.
      for (float& v : value) v = FiniteOrZero(v);
    }
    Floats& slot = state_[key];
    std::swap(slot, value);
    GiveBack(std::move(value));  // the replaced state becomes next step's scratch
  }
  if (options_.record_contributions) contributions_[bucket_id] = std::move(update.contribution);
  CountUncompressed(count, comm->size());
  return OkStatus();
}

const Floats* FeedbackCodec::Find(const StateKey& key) const {
  auto it = state_.find(key);
  return it == state_.end() ? nullptr : &it->second;
}

Status FeedbackCodec::Residual(uint64_t bucket_id, size_t count, const float** residual) const {
  *residual = nullptr;
  const Floats* res = Find({StateKind::kResidual, bucket_id, 0});
  if (res == nullptr) return OkStatus();
  if (res->size() != count) {
    return InvalidArgument("codec " + name() + ": bucket " + std::to_string(bucket_id) + " has " +
                           std::to_string(count) + " floats but its residual has " +
                           std::to_string(res->size()) +
                           "; the bucket layout changed: call ResetState() on every rank");
  }
  *residual = res->data();
  return OkStatus();
}

Status FeedbackCodec::WithResidual(const float* bucket, size_t count, uint64_t bucket_id,
                                   Floats* x) {
  const float* res;
  RETURN_IF_ERROR(Residual(bucket_id, count, &res));
  *x = Borrow(count);
  if (res == nullptr) {
    std::copy(bucket, bucket + count, x->begin());
  } else {
    for (size_t i = 0; i < count; ++i) (*x)[i] = bucket[i] + res[i];
  }
  return OkStatus();
}

Floats FeedbackCodec::Borrow(size_t n) {
  // Best fit among buffers large enough, else the largest (it grows once).
  size_t pick = pool_.size();
  for (size_t i = 0; i < pool_.size(); ++i) {
    const size_t cap = pool_[i].capacity();
    if (pick == pool_.size()) {
      pick = i;
      continue;
    }
    const size_t best = pool_[pick].capacity();
    if ((cap >= n && (best < n || cap < best)) || (best < n && cap > best)) pick = i;
  }
  Floats v;
  if (pick < pool_.size()) {
    v = std::move(pool_[pick]);
    pool_.erase(pool_.begin() + pick);
  }
  v.resize(n);
  return v;
}

void FeedbackCodec::GiveBack(Floats&& v) {
  if (v.capacity() == 0) return;
  if (pool_.size() < kPoolSize) {
    pool_.push_back(std::move(v));
    return;
  }
  // Full: keep the larger buffers, they are the expensive ones to fault in.
  auto smallest = std::min_element(pool_.begin(), pool_.end(), [](const auto& a, const auto& b) {
    return a.capacity() < b.capacity();
  });
  if (smallest->capacity() < v.capacity()) *smallest = std::move(v);
}

std::string FeedbackCodec::SaveState() const {
  std::string out;
  SaveStateInto(&out);
  return out;
}

size_t FeedbackCodec::StateBytesLocked() const {
  size_t total = sizeof(kMagic) + 4 + 4 + options_.name.size() + 8 + 8;
  for (const auto& [key, value] : state_) total += 1 + 8 + 4 + 8 + value.size() * sizeof(float);
  return total;
}

size_t FeedbackCodec::StateBytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return StateBytesLocked();
}

void FeedbackCodec::SaveStateInto(std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  // Sized once, then filled: appending would reallocate a model-sized string several times.
  const size_t total = StateBytesLocked();
  out->resize(total);
  char* at = out->data();
  auto put = [&at](const void* p, size_t n) {
    std::memcpy(at, p, n);
    at += n;
  };
  auto put_int = [&put](auto v) { put(&v, sizeof(v)); };
  put(kMagic, sizeof(kMagic));
  put_int(kVersion);
  put_int(static_cast<uint32_t>(options_.name.size()));
  put(options_.name.data(), options_.name.size());
  put_int(static_cast<uint64_t>(state_.size()));
  for (const auto& [key, value] : state_) {
    put_int(static_cast<uint8_t>(key.kind));
    put_int(key.bucket_id);
    put_int(key.tensor);
    put_int(static_cast<uint64_t>(value.size()));
    put(value.data(), value.size() * sizeof(float));
  }
  put_int(LaneFnv(out->data(), total - sizeof(uint64_t)));
}

Status FeedbackCodec::LoadState(const std::string& bytes) {
  const std::string what = "codec " + name() + " state: ";
  if (bytes.empty()) {
    ResetState();
    return OkStatus();
  }
  if (bytes.size() < sizeof(kMagic) + sizeof(uint64_t) ||
      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return DataLoss(what + "not codec state (bad magic or too short: " +
                    std::to_string(bytes.size()) + " bytes)");
  }
  const size_t body = bytes.size() - sizeof(uint64_t);
  uint64_t stored_sum;
  std::memcpy(&stored_sum, bytes.data() + body, sizeof(stored_sum));
  // The version picks the checksum; a version this build does not read is refused as
  // such below, once its (version 2 style) checksum has held.
  uint32_t claimed = 0;
  if (body >= 8) std::memcpy(&claimed, bytes.data() + 4, 4);
  if (stored_sum != StateChecksum(claimed, bytes.data(), body)) {
    return DataLoss(what + "checksum mismatch (corrupt or truncated checkpoint)");
  }
  Reader in(bytes, body);
  char magic[4];
  uint32_t version = 0, name_len = 0;
  in.GetBytes(magic, 4);
  if (!in.Get(&version) || (version != 1 && version != kVersion)) {
    return InvalidArgument(what + "version " + std::to_string(version) + ", this build reads 1 and " +
                           std::to_string(kVersion));
  }
  if (!in.Get(&name_len) || name_len > in.left()) return DataLoss(what + "truncated codec name");
  std::string saved_name(name_len, '\0');
  in.GetBytes(saved_name.data(), name_len);
  if (saved_name != options_.name) {
    return InvalidArgument(what + "was saved by codec '" + saved_name +
                           "'; the job now uses '" + options_.name +
                           "' (reset codec state when changing codecs)");
  }
  uint64_t entries = 0;
  if (!in.Get(&entries)) return DataLoss(what + "truncated entry count");
  std::map<StateKey, Floats> loaded;
  // Sizes are checked against the bytes present before anything is allocated, so a
  // corrupt count cannot ask for terabytes.
  for (uint64_t e = 0; e < entries; ++e) {
    uint8_t kind;
    StateKey key;
    uint64_t floats = 0;
    if (!in.Get(&kind) || !in.Get(&key.bucket_id) || !in.Get(&key.tensor) || !in.Get(&floats)) {
      return DataLoss(what + "entry " + std::to_string(e) + " header truncated");
    }
    if (kind > static_cast<uint8_t>(StateKind::kMomentum)) {
      return DataLoss(what + "entry " + std::to_string(e) + " has unknown kind " +
                      std::to_string(kind));
    }
    key.kind = static_cast<StateKind>(kind);
    if (floats > in.left() / sizeof(float)) {
      return DataLoss(what + "entry " + std::to_string(e) + " claims " + std::to_string(floats) +
                      " floats, only " + std::to_string(in.left()) + " bytes left");
    }
    Floats value(floats);
    in.GetBytes(value.data(), floats * sizeof(float));
    if (!loaded.emplace(key, std::move(value)).second) {
      return DataLoss(what + "duplicate entry for bucket " + std::to_string(key.bucket_id));
    }
  }
  if (in.left() != 0) {
    return DataLoss(what + std::to_string(in.left()) + " unexplained bytes after the entries");
  }
  std::lock_guard<std::mutex> lock(mu_);
  state_ = std::move(loaded);
  contributions_.clear();
  return OkStatus();
}

void FeedbackCodec::ResetState() {
  std::lock_guard<std::mutex> lock(mu_);
  state_.clear();
  contributions_.clear();
}

std::optional<std::vector<float>> FeedbackCodec::StateEntry(const StateKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Floats* v = Find(key);
  if (v == nullptr) return std::nullopt;
  return std::vector<float>(v->begin(), v->end());
}

std::optional<std::vector<float>> FeedbackCodec::LastContribution(uint64_t bucket_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = contributions_.find(bucket_id);
  if (it == contributions_.end()) return std::nullopt;
  return it->second;
}

}  // namespace compression

StatusOr<std::unique_ptr<GradientCodec>> MakeCodec(const CodecOptions& options) {
  const std::string& n = options.name;
  if (!options.error_feedback && n != "none" && n != "bf16" && n != "fp16") {
    return InvalidArgument("error feedback can be turned off only for codecs none, bf16 and fp16, not '" + n +
                           "', which drops most of each gradient without it");
  }
  if (n == "none") return compression::MakeNoneCodec(options);
  if (n == "bf16") return compression::MakeCastCodec(options, DType::kBF16);
  if (n == "fp16") return compression::MakeCastCodec(options, DType::kF16);
  if (n == "powersgd") {
    if (options.powersgd_rank < 1 || options.powersgd_rank > 1024) {
      return InvalidArgument("collectives.powersgd_rank must be in [1, 1024], got " +
                             std::to_string(options.powersgd_rank));
    }
    if (options.powersgd_warmup_steps < 0) {
      return InvalidArgument("collectives.powersgd_warmup_steps must be >= 0");
    }
    return compression::MakePowerSgdCodec(options);
  }
  if (n == "qblock") {
    if (options.qblock_bits != 8 && options.qblock_bits != 4) {
      return InvalidArgument("collectives.qblock_bits must be 8 or 4, got " +
                             std::to_string(options.qblock_bits));
    }
    // Even, so that 4-bit blocks start on a byte boundary.
    if (options.qblock_block < 2 || options.qblock_block % 2 != 0 ||
        options.qblock_block > (1u << 20)) {
      return InvalidArgument("collectives.qblock_block must be even and in [2, 2^20], got " +
                             std::to_string(options.qblock_block));
    }
    return compression::MakeQBlockCodec(options);
  }
  if (n == "topk") {
    if (!(options.topk_ratio > 0.0 && options.topk_ratio <= 1.0)) {
      return InvalidArgument("collectives.topk_ratio must be in (0, 1], got " +
                             std::to_string(options.topk_ratio));
    }
    if (options.topk_sample < 1) return InvalidArgument("collectives.topk_sample must be >= 1");
    if (!(options.topk_momentum >= 0.0 && options.topk_momentum < 1.0)) {
      return InvalidArgument("top-k momentum correction must be in [0, 1), got " +
                             std::to_string(options.topk_momentum));
    }
    return compression::MakeTopKCodec(options);
  }
  return InvalidArgument("unknown codec '" + n +
                         "' (expected none, bf16, fp16, powersgd, qblock or topk)");
}

}  // namespace shoal

// Helpers shared by the checkpoint tests, the crash writer and the benchmark: a
// deterministic fake trainer state and a self-removing temporary directory.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>
#include <filesystem>
#include <string>

#include "checkpoint/format.h"
#include "checkpoint/writer.h"

namespace shoal::testing {

// Deterministic bytes from (seed, index): xorshift64*, fast enough for hundreds of MiB.
inline void FillPattern(std::string* bytes, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  size_t n = bytes->size(), i = 0;
  char* p = bytes->data();
  for (; i + 8 <= n; i += 8) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t v = x * 0x2545F4914F6CDD1Dull;
    std::memcpy(p + i, &v, 8);
  }
  if (i < n) {  // the tail: the low bytes of one more step
    x ^= x >> 12;
    uint64_t v = x * 0x2545F4914F6CDD1Dull;
    std::memcpy(p + i, &v, n - i);
  }
}

// A trainer-like state of about `total_bytes`: a few F32 weight tensors, an
// "optim.momentum" tensor and a small codec tensor; contents depend only on `seed`.
inline TrainerSnapshot MakeSnapshot(uint64_t seed, size_t total_bytes, int64_t step = 1) {
  TrainerSnapshot s;
  s.job_id = "job-test";
  s.step = step;
  s.epoch = step / 10;
  s.cursor = step * 64;
  s.rng_state = "rng:" + std::to_string(seed * 31 + static_cast<uint64_t>(step));
  s.spec_digest = std::string(64, 'a');
  s.codec = "powersgd";
  s.world_size = 1;
  size_t floats = std::max<size_t>(total_bytes / 4, 256);  // so every tensor is non-empty
  size_t w = floats * 45 / 100 / 4 * 4, b = 16, m = floats * 45 / 100, c = floats - w - b - m;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, size_t n, uint64_t salt) {
    NamedTensor t{name, "F32", std::move(shape), std::string(n * 4, '\0')};
    FillPattern(&t.bytes, seed * 1000 + salt);
    s.tensors.push_back(std::move(t));
  };
  add("fc0.weight", {static_cast<int64_t>(w / 4), 4}, w, 1);
  add("fc0.bias", {static_cast<int64_t>(b)}, b, 2);
  add("optim.momentum", {static_cast<int64_t>(m)}, m, 3);
  add("codec.powersgd.q", {static_cast<int64_t>(c)}, c, 4);
  return s;
}

// Rank `rank`'s own state for TrainerSnapshot::rank_tensors (as a codec's residuals):
// "codec.state.<rank>", `bytes` long, contents depending only on (seed, rank).
inline constexpr size_t kRankStateBytes = 256 << 10;  // what ckpt_crash_writer saves
inline NamedTensor MakeRankState(uint64_t seed, int rank, size_t bytes) {
  NamedTensor t{"codec.state." + std::to_string(rank), "U8", {static_cast<int64_t>(bytes)}, std::string(bytes, '\0')};
  FillPattern(&t.bytes, seed * 7919 + static_cast<uint64_t>(rank) + 1);
  return t;
}

// An allgather of ShardInfo between threads acting as ranks (Gloo's spawnThreads style);
// each contribution goes through EncodeShardInfo/DecodeShardInfo like a real transport.
class ThreadAllgather {
 public:
  explicit ThreadAllgather(int world) : world_(world), pending_(world) {}
  StatusOr<std::vector<ShardInfo>> Gather(const ShardInfo& mine) {
    std::unique_lock<std::mutex> l(mu_);
    auto decoded = DecodeShardInfo(EncodeShardInfo(mine));
    if (!decoded.ok()) return decoded.status();
    pending_[mine.rank] = *decoded;
    uint64_t gen = generation_;
    if (++count_ == world_) {
      result_ = pending_;
      count_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(l, [&] { return generation_ != gen; });
    }
    return result_;
  }

 private:
  int world_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ShardInfo> pending_, result_;
  int count_ = 0;
  uint64_t generation_ = 0;
};

// mkdtemp under $TMPDIR (or /tmp); removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "ckpt") {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/shoal-" + tag + "-XXXXXX";
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace shoal::testing

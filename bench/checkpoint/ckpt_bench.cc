// ckpt_bench: checkpoint costs on a 256 MiB state, as ratios measured in one run.
//   (a) synchronous save (hash while writing, fsync, sign, rename, latest)
//   (b) training stall per asynchronous save (time SaveAsync blocks) vs (a)
//   (c) save throughput vs a plain sequential write + fsync of the same bytes
//   (d) verification throughput vs OpenSSL single-core SHA-256 x shards in parallel
// ckpt_bench [--dir DIR] [--mib 256] [--reps 5] [--shards 4] [--json]
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/async_writer.h"
#include "checkpoint/reader.h"
#include "checkpoint/test_util.h"
#include "checkpoint/writer.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/median.h"
#include "common/sha256.h"

namespace {

using namespace shoal;
namespace fs = std::filesystem;

// CPU seconds of the whole process (all threads): on a shared machine wall time also
// measures the neighbours, CPU time does not.
double CpuSeconds() {
  rusage r;
  ::getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

std::string LoadAverage() {
  auto text = ReadFile("/proc/loadavg");
  return text.ok() ? text->substr(0, text->find(' ')) : "?";
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "ckpt_bench: %s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

// The baseline: the same bytes, one file, sequential write() calls and one fsync.
double PlainWrite(const std::string& path, const TrainerSnapshot& snap) {
  Stopwatch sw;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Check(Internal(std::strerror(errno)), "plain open");
  for (const auto& t : snap.tensors) {
    size_t off = 0;
    while (off < t.bytes.size()) {
      ssize_t n = ::write(fd, t.bytes.data() + off, std::min<size_t>(t.bytes.size() - off, 8 << 20));
      if (n <= 0) Check(Internal(std::strerror(errno)), "plain write");
      off += static_cast<size_t>(n);
    }
  }
  if (::fsync(fd) != 0) Check(Internal(std::strerror(errno)), "plain fsync");
  ::close(fd);
  return sw.Seconds();
}

void RemoveSteps(const std::string& job) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(job, ec))
    if (ParseStepDirName(e.path().filename().string())) fs::remove_all(e.path(), ec);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  size_t mib = 256;
  int reps = 5, shards = 4;
  bool as_json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--mib" && i + 1 < argc) mib = std::strtoul(argv[++i], nullptr, 10);
    else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--shards" && i + 1 < argc) shards = std::atoi(argv[++i]);
    else if (a == "--json") as_json = true;
    else {
      std::fprintf(stderr, "usage: %s [--dir DIR] [--mib 256] [--reps 5] [--shards 4] [--json]\n", argv[0]);
      return 2;
    }
  }
  testing::TempDir tmp("bench");
  if (dir.empty()) dir = tmp.path();
  const std::string job = dir + "/bench-job";
  fs::create_directories(job);
  const uint64_t bytes = static_cast<uint64_t>(mib) << 20;
  TrainerSnapshot live = testing::MakeSnapshot(1, bytes, 1);
  const double gib = TotalBytes(live) / double(1ull << 30);
  KeyPair key = GenerateKeyPair();
  TrustStore trust;
  trust.Add(key.public_key);

  // (a) synchronous save and (c) the plain write, alternating, caches drained before each.
  AsyncCheckpointerOptions o;
  o.job_dir = job;
  o.key = key;
  auto sync_cp = AsyncCheckpointer::Create(o);
  Check(sync_cp.status(), "create");
  const std::string load_before = LoadAverage();
  std::vector<double> sync_s, plain_s, sync_cpu, plain_cpu;
  int save_shards = 0;
  for (int r = 0; r < reps; ++r) {
    ::sync();
    live.step = 100 + r;
    Stopwatch sw;
    double cpu0 = CpuSeconds();
    Check((*sync_cp)->SaveNow(live), "sync save");
    sync_s.push_back(sw.Seconds());
    sync_cpu.push_back(CpuSeconds() - cpu0);
    if (r == 0) {
      auto bytes = ReadFile(job + "/" + StepDirName(live.step) + "/manifest.pb");
      auto m = ParseManifest(bytes.ok() ? *bytes : "");
      save_shards = m.ok() ? m->shards_size() : 0;
    }
    RemoveSteps(job);
    ::sync();
    double cpu1 = CpuSeconds();
    plain_s.push_back(PlainWrite(dir + "/plain.bin", live));
    plain_cpu.push_back(CpuSeconds() - cpu1);
    fs::remove(dir + "/plain.bin");
  }
  sync_cp->reset();

  // (b) stall per asynchronous save. Two saves back to back warm both buffers (a
  // buffer's first fill page-faults; the second also finds the writer busy with the
  // first): reported as the cold stalls. A save made while the writer is idle takes the
  // first free buffer, so then each save is made after the last one finished, as in
  // training that saves less often than a save takes.
  auto async_cp = AsyncCheckpointer::Create(o);
  Check(async_cp.status(), "create");
  std::vector<double> stall_s, cold_s;
  for (int r = 0; r < 2; ++r) {
    live.step = 200 + r;
    Check((*async_cp)->SaveAsync(live), "async save");
    cold_s.push_back((*async_cp)->stats().last_stall_s);
  }
  Check((*async_cp)->Wait(), "async wait");
  RemoveSteps(job);
  for (int r = 0; r < reps; ++r) {
    ::sync();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // "training" between saves
    live.step = 210 + r;
    Check((*async_cp)->SaveAsync(live), "async save");
    stall_s.push_back((*async_cp)->stats().last_stall_s);
    Check((*async_cp)->Wait(), "async wait");
    RemoveSteps(job);
  }
  // For reference: the copy alone, into a warm buffer, no checkpointer involved.
  std::vector<double> copy_s;
  {
    TrainerSnapshot warm;
    CopySnapshotInto(live, &warm);
    for (int r = 0; r < reps; ++r) {
      Stopwatch sw;
      CopySnapshotInto(live, &warm);
      copy_s.push_back(sw.Seconds());
    }
  }
  // The trainer's way: Prewarm faults the buffers in on the writer thread while
  // training starts, and the first save finds them warm.
  double prewarmed_first_s = 0;
  {
    auto fresh = AsyncCheckpointer::Create(o);
    Check(fresh.status(), "create");
    std::vector<size_t> sizes;
    for (const NamedTensor& t : live.tensors) sizes.push_back(t.bytes.size());
    (*fresh)->Prewarm(sizes);
    while ((*fresh)->stats().prewarmed_buffers < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    live.step = 250;
    Check((*fresh)->SaveAsync(live), "async save");
    prewarmed_first_s = (*fresh)->stats().last_stall_s;
    Check((*fresh)->Wait(), "async wait");
    RemoveSteps(job);
  }
  // Back to back, buffers warm: the second save copies while the writer hashes and
  // writes the first; the third finds both buffers busy and waits for the oldest.
  std::vector<double> b2b_s;
  for (int r = 0; r < 3; ++r) {
    live.step = 300 + r;
    Check((*async_cp)->SaveAsync(live), "async save");
    b2b_s.push_back((*async_cp)->stats().last_stall_s);
  }
  Check((*async_cp)->Wait(), "async wait");
  async_cp->reset();
  RemoveSteps(job);

  // (d) verification of a checkpoint written as `shards` ranks, against raw SHA-256.
  auto ser = SerializeSnapshot(live);
  Check(ser.status(), "serialize");
  std::vector<ShardInfo> infos;
  for (int r = 0; r < shards; ++r) {
    ByteRange b = SliceForRank(ser->bytes.size(), r, shards);
    auto info = WriteShard(StagingPath(job, 400, "bench"), r, shards, std::string_view(ser->bytes).substr(b.begin, b.size()));
    Check(info.status(), "write shard");
    infos.push_back(*info);
  }
  Check(CommitCheckpoint(job, 400, ser->manifest, infos, &key), "commit");
  std::vector<double> sha_s, verify_s, load_s;
  for (int r = 0; r < reps; ++r) {
    Stopwatch sw;
    Digest d = Sha256Of(ser->bytes);
    sha_s.push_back(sw.Seconds());
    (void)d;
    sw.Reset();
    Check(VerifyCheckpoint(job + "/step-400", trust, false).status(), "verify");
    verify_s.push_back(sw.Seconds());
    sw.Reset();
    Check(LoadCheckpoint(job + "/step-400", trust, false).status(), "load");
    load_s.push_back(sw.Seconds());
  }
  ser->bytes.clear();

  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const int parallel = std::min<int>(shards, static_cast<int>(cores));
  const double sync_med = Median(sync_s), plain_med = Median(plain_s), stall_med = Median(stall_s);
  const double sha_gibs = gib / Median(sha_s), verify_gibs = gib / Median(verify_s);
  nlohmann::json j = {
      {"state_mib", mib}, {"reps", reps}, {"shards", shards}, {"hardware_threads", cores},
      {"sync_save_s", sync_med}, {"sync_save_shards", save_shards}, {"sync_save_gibs", gib / sync_med},
      {"sync_save_cpu_s", Median(sync_cpu)}, {"plain_write_cpu_s", Median(plain_cpu)},
      {"load_average_before", load_before}, {"load_average_after", LoadAverage()},
      {"plain_write_fsync_s", plain_med}, {"plain_write_gibs", gib / plain_med},
      {"save_vs_plain_throughput", plain_med / sync_med},
      {"async_stall_s", stall_med}, {"async_stall_vs_sync", stall_med / sync_med},
      {"async_cold_stall_s", cold_s}, {"async_first_stall_after_prewarm_s", prewarmed_first_s}, {"state_copy_s", Median(copy_s)}, {"async_back_to_back_stall_s", b2b_s},
      {"sha256_single_core_gibs", sha_gibs}, {"verify_s", Median(verify_s)}, {"verify_gibs", verify_gibs},
      {"verify_vs_sha_x_shards", verify_gibs / (sha_gibs * shards)},
      {"verify_vs_sha_x_parallel", verify_gibs / (sha_gibs * parallel)}, {"load_gibs", gib / Median(load_s)}};
  if (as_json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("checkpoint bench: %zu MiB state, %d reps (medians), %u hardware threads, dir %s, load average %s -> %s\n",
              mib, reps, cores, dir.c_str(), load_before.c_str(), LoadAverage().c_str());
  std::printf("(a) synchronous save            %8.3f s   %6.2f GiB/s (%d shard files hashed in parallel)\n", sync_med,
              gib / sync_med, save_shards);
  std::printf("    CPU: save %.3f s, plain write %.3f s (the difference is SHA-256)\n", Median(sync_cpu), Median(plain_cpu));
  std::printf("(b) async stall per save        %8.4f s   = %.1f%% of the sync save (target <= 10%%)\n", stall_med,
              100 * stall_med / sync_med);
  std::printf("    the copy alone (warm buffer) %7.4f s   %6.2f GiB/s\n", Median(copy_s), gib / Median(copy_s));
  std::printf("    first saves (cold buffers)  %.4f %.4f s; first after Prewarm %.4f s; back to back (warm): %.4f %.4f %.4f s\n",
              cold_s[0], cold_s[1], prewarmed_first_s, b2b_s[0], b2b_s[1], b2b_s[2]);
  std::printf("(c) plain write + fsync         %8.3f s   %6.2f GiB/s; save/plain throughput = %.2f (target >= 0.8)\n",
              plain_med, gib / plain_med, plain_med / sync_med);
  std::printf("(d) SHA-256 one core            %8.3f s   %6.2f GiB/s\n", Median(sha_s), sha_gibs);
  std::printf("    verify %d shards (warm cache)%7.3f s   %6.2f GiB/s = %.2f x (SHA-256 x %d shards), %.2f x (SHA-256 x %d parallel)\n",
              shards, Median(verify_s), verify_gibs, verify_gibs / (sha_gibs * shards), shards,
              verify_gibs / (sha_gibs * parallel), parallel);
  std::printf("    load (verify + tensors)     %8.3f s   %6.2f GiB/s\n", Median(load_s), gib / Median(load_s));
  return 0;
}

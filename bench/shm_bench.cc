// Shared memory on one host (issue 18), side by side in one run, two modes:
//
// Allreduce: Shoal's shm communicator against its Gloo and MPI communicators and
// MPI_Allreduce itself, in the same processes.
//   mpirun --allow-run-as-root --oversubscribe -np 4 build/bin/shm_bench [--repeats 11] [--json]
// Sizes: the example model's gradient (784*256+256+256*128+128+128*10+10 = 235,146
// floats, what one training step reduces) and a 16 MiB bucket. shm is run three
// times: waiters that park at once (spin 0), that spin 50 us first, and that yield
// the core for 200 us first, since how to wait is the whole question on a machine with
// more ranks than cores.
//
// Training: the example job through `shoalctl run` (next to this binary) with 2 and 4
// workers on backends shm, mpi and gloo, in turn within every repeat (the order
// rotated), samples/s per run; with --accuracy also one full run (5 epochs, evaluated)
// per backend at 2 workers.
//   build/bin/shm_bench --train [--repeats 5] [--steps 2000] [--accuracy] [--json]
#include <mpi.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/file_kv_store.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/mpi/mpi_communicator.h"
#include "collectives/shm/shm_communicator.h"
#include "common/clock.h"
#include "common/median.h"

namespace shoal {
namespace {

// One `shoalctl run` of the example job; its summary, or null on failure.
nlohmann::json RunJob(const std::string& shoalctl, const std::string& backend, int workers, int steps,
                      bool evaluate) {
  const std::string dir = "/tmp/shoal-shm-bench-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string cmd = "cd " + dir + " && " + shoalctl + " run " + SHOAL_SOURCE_DIR +
                    "/examples/fashion-mnist.yaml --json --quiet --workers " + std::to_string(workers) +
                    " --set collectives.backend=" + backend;
  if (steps > 0) cmd += " --set training.max_steps=" + std::to_string(steps);
  cmd += std::string(" --set training.evaluate=") + (evaluate ? "true" : "false") + " 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while (p && (n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int rc = p ? ::pclose(p) : -1;
  std::filesystem::remove_all(dir);
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (rc != 0 || j.is_discarded()) {
    std::fprintf(stderr, "shm_bench: %s with %d worker(s) failed (exit %d)\n", backend.c_str(), workers, rc);
    return nullptr;
  }
  return j;
}

int TrainMain(int repeats, int steps, bool accuracy, bool json) {
  const std::string shoalctl =
      (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "shoalctl").string();
  const std::vector<std::string> backends = {"shm", "mpi", "gloo"};
  // [workers][backend] -> per-repeat samples/s and communication share of the wall
  std::map<int, std::map<std::string, std::vector<double>>> sps, comm;
  for (int r = 0; r < repeats; ++r) {
    for (int w : {2, 4}) {
      for (size_t k = 0; k < backends.size(); ++k) {
        const std::string& b = backends[(k + r) % backends.size()];
        const auto s = RunJob(shoalctl, b, w, steps, false);
        if (s.is_null()) return 1;
        sps[w][b].push_back(s["samples_per_second"].get<double>());
        comm[w][b].push_back(s["comm_seconds"].get<double>() / s["wall_seconds"].get<double>());
        if (!json) std::fprintf(stderr, "  repeat %d, %d workers, %-4s %8.0f samples/s\n", r + 1, w, b.c_str(), sps[w][b].back());
      }
    }
  }
  auto ratio = [&](int w, const std::string& a, const std::string& b) {
    std::vector<double> v;
    for (int r = 0; r < repeats; ++r) v.push_back(sps[w][a][r] / sps[w][b][r]);
    return Median(v);
  };
  nlohmann::json out = {{"steps", steps}, {"repeats", repeats}};
  for (int w : {2, 4}) {
    for (const auto& b : backends) {
      const auto& v = sps[w][b];
      out["workers_" + std::to_string(w)][b] = {{"samples_per_second", Median(v)},
                                                {"min", *std::min_element(v.begin(), v.end())},
                                                {"max", *std::max_element(v.begin(), v.end())},
                                                {"comm_share", Median(comm[w][b])}};
    }
    out["workers_" + std::to_string(w)]["shm_over_mpi"] = ratio(w, "shm", "mpi");
    out["workers_" + std::to_string(w)]["shm_over_gloo"] = ratio(w, "shm", "gloo");
  }
  if (accuracy) {
    for (const auto& b : backends) {
      const auto s = RunJob(shoalctl, b, 2, 0, true);
      if (s.is_null()) return 1;
      out["accuracy_2_workers"][b] = s["final_test_accuracy"].get<double>();
    }
  }
  if (json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("example job, %d steps, %d repeats (backends in turn): samples/s median [min-max], comm share\n", steps,
              repeats);
  for (int w : {2, 4}) {
    auto& o = out["workers_" + std::to_string(w)];
    for (const auto& b : backends) {
      std::printf("  %d workers %-4s %8.0f [%.0f-%.0f]  comm %2.0f%%\n", w, b.c_str(),
                  o[b]["samples_per_second"].get<double>(), o[b]["min"].get<double>(), o[b]["max"].get<double>(),
                  100 * o[b]["comm_share"].get<double>());
    }
    std::printf("  %d workers: shm / mpi %.2fx, shm / gloo %.2fx (median of per-repeat ratios)\n", w,
                o["shm_over_mpi"].get<double>(), o["shm_over_gloo"].get<double>());
  }
  if (accuracy) {
    for (const auto& b : backends) {
      std::printf("  test accuracy, 2 workers, 5 epochs, %-4s %.4f\n", b.c_str(),
                  out["accuracy_2_workers"][b].get<double>());
    }
  }
  return 0;
}

// The mean time of `iters` calls on the slowest rank, after a barrier.
double TimeOnce(const std::function<void()>& op, int iters) {
  MPI_Barrier(MPI_COMM_WORLD);
  Stopwatch sw;
  for (int i = 0; i < iters; ++i) op();
  double t = sw.Seconds() / iters, tmax = 0;
  MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return tmax;
}

struct Way {
  const char* name;
  std::function<void()> op;
};

int Main(int argc, char** argv) {
  bool json = false, train = false, accuracy = false;
  int repeats = 0, steps = 2000;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "--train")) train = true;
    else if (!std::strcmp(argv[i], "--accuracy")) accuracy = true;
    else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: shm_bench [--train [--steps N] [--accuracy]] [--repeats N] [--json]\n");
      return 2;
    }
  }
  if (train) return TrainMain(repeats > 0 ? repeats : 5, steps, accuracy, json);
  if (repeats == 0) repeats = 11;
  auto mpi = MakeMpiCommunicator();
  if (!mpi.ok()) {
    std::fprintf(stderr, "%s\n", mpi.status().ToString().c_str());
    return 1;
  }
  const int rank = (*mpi)->rank(), world = (*mpi)->size();
  long long stamp = rank == 0 ? static_cast<long long>(UnixMillis()) : 0;
  MPI_Bcast(&stamp, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  FileKvStore kv("/tmp/shoal-shm-bench-" + std::to_string(stamp));
  const auto timeout = std::chrono::seconds(60);
  auto gloo = MakeGlooCommunicator(rank, world, &kv, "gloo/", timeout);
  ShmOptions park, spin, yield;
  park.spin_us = 0;
  park.yield_us = 0;
  spin.spin_us = 50;
  spin.yield_us = 0;
  yield.spin_us = 0;
  yield.yield_us = 200;
  auto shm_park = MakeShmCommunicator(rank, world, &kv, "shm-park/", timeout, park);
  auto shm_spin = MakeShmCommunicator(rank, world, &kv, "shm-spin/", timeout, spin);
  auto shm_yield = MakeShmCommunicator(rank, world, &kv, "shm-yield/", timeout, yield);
  for (const Status& s : {gloo.status(), shm_park.status(), shm_spin.status(), shm_yield.status()}) {
    if (!s.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", rank, s.ToString().c_str());
      return 1;
    }
  }
  CollectiveOptions opts;
  auto check = [&](const Status& s) {
    if (!s.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", rank, s.ToString().c_str());
      std::exit(1);
    }
  };

  nlohmann::json results = nlohmann::json::array();
  for (size_t count : {size_t{235146}, size_t{4} << 20}) {
    std::vector<float> buf(count, 1.0f);
    const int iters = count > (1 << 20) ? 5 : 50;
    const std::vector<Way> ways = {
        {"shm spin 0", [&] { check((*shm_park)->AllReduce(buf.data(), count, DType::kF32, ReduceOp::kAverage, opts)); }},
        {"shm spin 50us", [&] { check((*shm_spin)->AllReduce(buf.data(), count, DType::kF32, ReduceOp::kAverage, opts)); }},
        {"shm yield 200us", [&] { check((*shm_yield)->AllReduce(buf.data(), count, DType::kF32, ReduceOp::kAverage, opts)); }},
        {"gloo", [&] { check((*gloo)->AllReduce(buf.data(), count, DType::kF32, ReduceOp::kAverage, opts)); }},
        {"mpi", [&] { check((*mpi)->AllReduce(buf.data(), count, DType::kF32, ReduceOp::kAverage, opts)); }},
        {"MPI_Allreduce", [&] {
           MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
         }},
    };
    std::vector<std::vector<double>> t(ways.size());
    for (const Way& w : ways) {
      for (int i = 0; i < 3; ++i) w.op();  // warm-up: pages touched, connections hot
    }
    // Each way timed in turn within every repeat, so load drifts over all alike.
    for (int r = 0; r < repeats; ++r) {
      for (size_t w = 0; w < ways.size(); ++w) t[w].push_back(TimeOnce(ways[w].op, iters));
    }
    // Per-repeat ratios against shm's best setting of the three.
    size_t best_shm = 0;
    for (size_t w = 1; w < 3; ++w) {
      if (Median(t[w]) < Median(t[best_shm])) best_shm = w;
    }
    auto ratio = [&](size_t a, size_t b) {
      std::vector<double> r;
      for (int i = 0; i < repeats; ++i) r.push_back(t[a][i] / t[b][i]);
      return Median(r);
    };
    nlohmann::json row = {{"floats", count}, {"iters", iters}, {"best_shm", ways[best_shm].name}};
    for (size_t w = 0; w < ways.size(); ++w) {
      row["ways"][ways[w].name] = {{"median_ms", Median(t[w]) * 1e3},
                                   {"min_ms", *std::min_element(t[w].begin(), t[w].end()) * 1e3},
                                   {"max_ms", *std::max_element(t[w].begin(), t[w].end()) * 1e3}};
    }
    row["speedup_vs_gloo"] = ratio(3, best_shm);
    row["speedup_vs_mpi"] = ratio(4, best_shm);
    row["speedup_vs_MPI_Allreduce"] = ratio(5, best_shm);
    results.push_back(row);
  }
  if (rank == 0) {
    if (json) {
      std::printf("%s\n", nlohmann::json{{"world", world}, {"repeats", repeats}, {"results", results}}.dump(2).c_str());
    } else {
      std::printf("allreduce (f32 average), %d ranks, every way timed in turn in each of %d repeats; "
                  "time of the slowest rank: median [min-max]\n",
                  world, repeats);
      for (auto& r : results) {
        std::printf("%zu floats:\n", r["floats"].get<size_t>());
        for (auto& [name, v] : r["ways"].items()) {
          std::printf("  %-14s %8.3f ms  [%.3f-%.3f]\n", name.c_str(), v["median_ms"].get<double>(),
                      v["min_ms"].get<double>(), v["max_ms"].get<double>());
        }
        std::printf("  speed-up of %s (median of per-repeat time ratios): %.2fx gloo, %.2fx mpi, %.2fx MPI_Allreduce\n",
                    r["best_shm"].get<std::string>().c_str(), r["speedup_vs_gloo"].get<double>(),
                    r["speedup_vs_mpi"].get<double>(), r["speedup_vs_MPI_Allreduce"].get<double>());
      }
    }
  }
  shm_park->reset();
  shm_spin->reset();
  shm_yield->reset();
  gloo->reset();
  mpi->reset();
  FinalizeMpiIfInitialized();
  return 0;
}

}  // namespace
}  // namespace shoal

int main(int argc, char** argv) { return shoal::Main(argc, argv); }

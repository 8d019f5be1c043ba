// Allreduce throughput through Shoal's communicators against calling the backends
// directly, on the same connections, in one run:
//   shoal gloo  vs  gloo::allreduce (ring) on the same gloo::Context
//   shoal mpi   vs  MPI_Allreduce on MPI_COMM_WORLD
// Launch: mpirun --allow-run-as-root -np 2 build/bin/allreduce_bench [--json]
// Sizes: the example model's gradient (235,146 floats) and a large 64 MiB buffer.
#include <gloo/allreduce.h>
#include <gloo/math.h>
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/file_kv_store.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/mpi/mpi_communicator.h"
#include "common/clock.h"
#include "common/median.h"

namespace shoal {
namespace {

// The mean time of `iters` calls on the slowest rank, after a barrier.
double TimeOnce(const std::function<void()>& op, int iters) {
  MPI_Barrier(MPI_COMM_WORLD);
  Stopwatch sw;
  for (int i = 0; i < iters; ++i) op();
  double t = sw.Seconds() / iters, tmax = 0;
  MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);  // the slowest rank decides
  return tmax;
}

// Each way timed in turn within every repeat, so the machine's load drifts over all
// of them alike; per way the median time, and the median of per-repeat time ratios
// of way `a` over way `b`.
struct Interleaved {
  std::vector<std::vector<double>> t;
  double median(size_t w) const { return Median(t[w]); }
  double ratio(size_t a, size_t b) const {
    std::vector<double> r;
    for (size_t i = 0; i < t[a].size(); ++i) r.push_back(t[a][i] / t[b][i]);
    return Median(r);
  }
};

Interleaved TimeInterleaved(const std::vector<std::function<void()>>& ways, int iters, int repeats) {
  Interleaved out;
  out.t.resize(ways.size());
  for (const auto& op : ways) {
    for (int i = 0; i < 3; ++i) op();  // warm-up
  }
  for (int r = 0; r < repeats; ++r) {
    for (size_t w = 0; w < ways.size(); ++w) out.t[w].push_back(TimeOnce(ways[w], iters));
  }
  return out;
}

constexpr int kRepeats = 11;

int Main(int argc, char** argv) {
  bool json = argc > 1 && std::strcmp(argv[1], "--json") == 0;
  auto mpi = MakeMpiCommunicator();
  if (!mpi.ok()) {
    std::fprintf(stderr, "%s\n", mpi.status().ToString().c_str());
    return 1;
  }
  int rank = (*mpi)->rank(), world = (*mpi)->size();
  // A per-run directory for the Gloo rendezvous, agreed through MPI.
  long long stamp = rank == 0 ? static_cast<long long>(UnixMillis()) : 0;
  MPI_Bcast(&stamp, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  FileKvStore kv("/tmp/shoal-allreduce-bench-" + std::to_string(stamp));
  auto gloo_comm = MakeGlooCommunicator(rank, world, &kv, "bench/", std::chrono::seconds(60));
  if (!gloo_comm.ok()) {
    std::fprintf(stderr, "%s\n", gloo_comm.status().ToString().c_str());
    return 1;
  }
  auto* gloo = static_cast<GlooCommunicator*>(gloo_comm->get());
  CollectiveOptions opts;

  nlohmann::json results = nlohmann::json::array();
  for (size_t count : {size_t{235146}, size_t{16} << 20}) {
    std::vector<float> buf(count, 1.0f / world);
    int iters = count > (1 << 20) ? 5 : 50;
    double bytes = count * sizeof(float);
    const Interleaved t = TimeInterleaved(
        {[&] { (void)gloo->AllReduce(buf.data(), count, DType::kF32, ReduceOp::kSum, opts); },
         [&] {
           gloo::AllreduceOptions o(gloo->shared_context());
           o.setInput(buf.data(), count);
           o.setOutput(buf.data(), count);
           o.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
           o.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
           o.setTag(7);
           gloo::allreduce(o);
         },
         [&] { (void)(*mpi)->AllReduce(buf.data(), count, DType::kF32, ReduceOp::kSum, opts); },
         [&] { MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); }},
        iters, kRepeats);
    const double shoal_gloo = t.median(0), raw_gloo = t.median(1), shoal_mpi = t.median(2), raw_mpi = t.median(3);
    results.push_back({{"floats", count},
                       {"bytes", bytes},
                       {"shoal_gloo_ms", shoal_gloo * 1e3},
                       {"raw_gloo_ms", raw_gloo * 1e3},
                       {"shoal_mpi_ms", shoal_mpi * 1e3},
                       {"raw_mpi_ms", raw_mpi * 1e3},
                       {"shoal_gloo_GBps", bytes / shoal_gloo / 1e9},
                       {"raw_gloo_GBps", bytes / raw_gloo / 1e9},
                       {"shoal_mpi_GBps", bytes / shoal_mpi / 1e9},
                       {"raw_mpi_GBps", bytes / raw_mpi / 1e9},
                       {"gloo_time_ratio_shoal_over_raw", t.ratio(0, 1)},
                       {"mpi_time_ratio_shoal_over_raw", t.ratio(2, 3)}});
  }
  if (rank == 0) {
    if (json) {
      std::printf("%s\n", nlohmann::json{{"world", world}, {"results", results}}.dump(2).c_str());
    } else {
      std::printf("allreduce, %d ranks, the four calls timed in turn in each of %d repeats; medians (time of the slowest rank)\n",
                  world, kRepeats);
      std::printf("%10s %11s %11s %7s %11s %11s %7s\n", "floats", "shoal-gloo", "raw-gloo", "ratio", "shoal-mpi",
                  "raw-mpi", "ratio");
      for (auto& r : results)
        std::printf("%10zu %8.3f ms %8.3f ms %7.3f %8.3f ms %8.3f ms %7.3f\n", r["floats"].get<size_t>(),
                    r["shoal_gloo_ms"].get<double>(), r["raw_gloo_ms"].get<double>(),
                    r["gloo_time_ratio_shoal_over_raw"].get<double>(), r["shoal_mpi_ms"].get<double>(),
                    r["raw_mpi_ms"].get<double>(), r["mpi_time_ratio_shoal_over_raw"].get<double>());
      std::printf("ratio = median over repeats of Shoal time / direct backend time (1.00 = no overhead)\n");
    }
  }
  gloo_comm->reset();
  mpi->reset();
  FinalizeMpiIfInitialized();
  return 0;
}

}  // namespace
}  // namespace shoal

int main(int argc, char** argv) { return shoal::Main(argc, argv); }

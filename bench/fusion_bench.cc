// Fusion: 1,000 model-like gradient tensors (sizes log-uniform 1 KiB..4 MiB, fixed
// seed) reduced three ways on the same backend: through the Reducer (fusion buckets),
// as ONE allreduce of the same total bytes, and as one allreduce per tensor.
// Launch: mpirun --allow-run-as-root -np 2 build/bin/fusion_bench [--sweep]
//         [--bucket-mib X] [--first-mib Y] [--separate] [--repeats N] [--tensors N]
//         [--backend gloo|mpi]
// --separate allocates every tensor on its own (the Reducer then stages buckets);
// by default they share one buffer like the MLP's (buckets are views).
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench/file_kv_store.h"
#include "collectives/compression/codec.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/mpi/mpi_communicator.h"
#include "collectives/reducer.h"
#include "common/clock.h"
#include "common/median.h"

namespace shoal {
namespace {

// Median over `repeats` of one call, after one warm-up; the slowest rank decides.
// One timed run: the slowest rank's time.
double TimeOnce(const std::function<void()>& op) {
  MPI_Barrier(MPI_COMM_WORLD);
  Stopwatch sw;
  op();
  double mine = sw.Seconds(), slowest = 0;
  MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return slowest;
}

double TimeIt(const std::function<void()>& op, int repeats) {
  op();
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) t.push_back(TimeOnce(op));
  return Median(t);
}

// Several ways of reducing the same bytes, timed in turn within each repeat (so that
// the machine's load drifts over all of them alike); medians per way, and the median
// of each way's per-repeat ratio to the first.
struct Interleaved {
  std::vector<std::vector<double>> times;
  double median(size_t way) const { return Median(times[way]); }
  double median_ratio(size_t way) const {  // throughput of `way` relative to way 0
    std::vector<double> r;
    for (size_t i = 0; i < times[0].size(); ++i) r.push_back(times[0][i] / times[way][i]);
    return Median(r);
  }
};

Interleaved TimeInterleaved(const std::vector<std::function<void()>>& ways, int repeats) {
  Interleaved out;
  out.times.resize(ways.size());
  for (const auto& op : ways) op();  // warm-up
  for (int r = 0; r < repeats; ++r) {
    for (size_t w = 0; w < ways.size(); ++w) out.times[w].push_back(TimeOnce(ways[w]));
  }
  return out;
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

struct TensorSet {
  std::vector<float> flat;
  std::vector<std::vector<float>> separate;
  std::vector<ParamTensor> params;
  size_t total = 0;
};

TensorSet MakeTensors(int count, bool separate) {
  std::mt19937_64 rng(20261121);
  std::uniform_real_distribution<double> u(std::log(1024.0), std::log(4.0 * 1024 * 1024));
  TensorSet m;
  std::vector<size_t> numel;
  for (int i = 0; i < count; ++i) {
    numel.push_back(static_cast<size_t>(std::exp(u(rng))) / sizeof(float));
    m.total += numel.back();
  }
  if (!separate) m.flat.assign(m.total, 1.0f);
  m.separate.resize(count);
  size_t at = 0;
  for (int i = 0; i < count; ++i) {
    ParamTensor p;
    p.name = std::to_string(i);  // not "t" + ...: GCC 12 warns falsely (-Wrestrict)
    p.shape = {static_cast<int64_t>(numel[i])};
    p.numel = numel[i];
    if (separate) {
      m.separate[i].assign(numel[i], 1.0f);
      p.grad = m.separate[i].data();
    } else {
      p.grad = m.flat.data() + at;
    }
    at += numel[i];
    m.params.push_back(p);
  }
  return m;
}

// A Reducer over the tensor set with the trainer's default codec ("none"); Step()
// marks every tensor ready in backward order and waits.
class ReducerRun {
 public:
  ReducerRun(Communicator* comm, TensorSet& m, double bucket_mib, double first_mib, int max_in_flight = 0)
      : m_(m) {
    ReducerOptions o;
    o.bucket_mib = bucket_mib;
    o.first_bucket_mib = first_mib;
    o.max_in_flight = max_in_flight;
    auto codec = MakeCodec(CodecOptions{});
    Check(codec.status(), "codec");
    codec_ = std::move(codec).value();
    reducer_ = std::make_unique<Reducer>(comm, codec_.get(), m.params, o);
  }
  void Step() {
    reducer_->BeginStep(step_++);
    for (size_t i = m_.params.size(); i-- > 0;) reducer_->MarkReady(i);  // backward order
    Check(reducer_->Wait(), "reducer");
  }
  int in_flight() const { return reducer_->stats().in_flight; }

 private:
  TensorSet& m_;
  std::unique_ptr<GradientCodec> codec_;
  std::unique_ptr<Reducer> reducer_;
  int64_t step_ = 0;
};

double ReducerTime(Communicator* comm, TensorSet& m, double bucket_mib, double first_mib, int repeats) {
  ReducerRun run(comm, m, bucket_mib, first_mib);
  return TimeIt([&] { run.Step(); }, repeats);
}

int Main(int argc, char** argv) {
  bool sweep = false, separate = false;
  double bucket_mib = ReducerOptions{}.bucket_mib, first_mib = ReducerOptions{}.first_bucket_mib;
  int repeats = 5, tensors = 1000;
  std::string only;  // --backend gloo|mpi: run one backend only
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--sweep") sweep = true;
    else if (a == "--separate") separate = true;
    else if (a == "--bucket-mib" && i + 1 < argc) bucket_mib = std::atof(argv[++i]);
    else if (a == "--first-mib" && i + 1 < argc) first_mib = std::atof(argv[++i]);
    else if (a == "--repeats" && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (a == "--tensors" && i + 1 < argc) tensors = std::atoi(argv[++i]);
    else if (a == "--backend" && i + 1 < argc) only = argv[++i];
  }
  auto mpi = MakeMpiCommunicator();
  Check(mpi.status(), "mpi");
  const int rank = (*mpi)->rank(), world = (*mpi)->size();
  long long stamp = rank == 0 ? static_cast<long long>(UnixMillis()) : 0;
  MPI_Bcast(&stamp, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  FileKvStore kv("/tmp/shoal-fusion-bench-" + std::to_string(stamp));
  auto gloo = MakeGlooCommunicator(rank, world, &kv, "bench/", std::chrono::seconds(120));
  Check(gloo.status(), "gloo");

  TensorSet m = MakeTensors(tensors, separate);
  const double bytes = m.total * sizeof(float);
  if (rank == 0) {
    std::printf("fusion: %d tensors, %.1f MiB total, %d ranks, %s layout, median of %d\n",
                tensors, bytes / (1 << 20), world, separate ? "separate" : "one-buffer", repeats);
  }
  std::vector<float> big(m.total, 1.0f);
  CollectiveOptions opts;
  opts.timeout = std::chrono::seconds(120);
  for (Communicator* comm : {gloo->get(), mpi->get()}) {
    if (!only.empty() && comm->backend() != only) continue;
    // Interleaved: one big allreduce, the Reducer (default buckets in flight), the
    // Reducer with one bucket in flight, one allreduce per tensor.
    ReducerRun fused(comm, m, bucket_mib, first_mib), serial(comm, m, bucket_mib, first_mib, 1);
    const Interleaved t = TimeInterleaved(
        {[&] { Check(comm->AllReduce(big.data(), big.size(), DType::kF32, ReduceOp::kSum, opts), "single"); },
         [&] { fused.Step(); }, [&] { serial.Step(); },
         [&] {
           for (auto& p : m.params) {
             Check(comm->AllReduce(p.grad, p.numel, DType::kF32, ReduceOp::kSum, opts), "per-tensor");
           }
         }},
        repeats);
    if (rank == 0) {
      std::printf("%-5s single %8.1f ms (%.2f GB/s) | per-tensor %8.1f ms | reducer(%g/%g MiB, %d in flight) "
                  "%8.1f ms (%.2f GB/s) | reducer/single throughput %.3f, reducer/per-tensor %.2f | "
                  "1 in flight: %8.1f ms, %.3f of single\n",
                  comm->backend().c_str(), t.median(0) * 1e3, bytes / t.median(0) / 1e9, t.median(3) * 1e3,
                  bucket_mib, first_mib, fused.in_flight(), t.median(1) * 1e3, bytes / t.median(1) / 1e9,
                  t.median_ratio(1), t.median(3) / t.median(1), t.median(2) * 1e3, t.median_ratio(2));
    }
    const double single = t.median(0);
    if (sweep) {
      for (double b : {4.0, 8.0, 16.0, 32.0, 64.0}) {
        for (double f : {1.0}) {
          const double t = ReducerTime(comm, m, b, f, repeats);
          if (rank == 0) {
            std::printf("  sweep %-5s bucket %5.1f MiB first %4.1f MiB: %8.1f ms (%.3f of single)\n",
                        comm->backend().c_str(), b, f, t * 1e3, single / t);
          }
        }
      }
    }
  }
  gloo->reset();
  mpi->reset();
  FinalizeMpiIfInitialized();
  return 0;
}

}  // namespace
}  // namespace shoal

int main(int argc, char** argv) { return shoal::Main(argc, argv); }

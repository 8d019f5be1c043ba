// Overlap: the MLP 784-2048-2048-10 trained on random data on every rank, with the
// gradient reduction overlapped with backward (Reducer, overlap=true) and after it
// (overlap=false), steps of the two interleaved; prints communication time without
// overlap against the time the step actually waited for communication with overlap.
// Launch: mpirun --allow-run-as-root -np 2 build/bin/overlap_bench [--backend gloo|mpi]
//         [--batch N] [--steps N] [--bucket-mib X] [--first-mib Y] [--codec NAME]
// --codec picks the gradient codec (default none; PowerSGD at rank 4 without warm-up);
// the codec's own CPU time per step (CodecStats::compute_seconds) is printed beside
// the step's.
// Set SHOAL_EMULATE_BANDWIDTH_MBPS (gloo only) to make communication matter.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <cstdlib>
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
#include "worker/models/mlp.h"

namespace shoal {
namespace {

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

// One training step's forward and backward with every gradient bucket reduced as
// backward produces it, then the wait for the rest. Lives here, not beside the
// Reducer: collectives/ must not know the Model interface above it.
StatusOr<double> ForwardBackwardReduced(Model* model, const Batch& batch, float grad_scale,
                                        int64_t step, Reducer* reducer) {
  reducer->BeginStep(step);
  const double loss_sum = model->ForwardBackward(batch, grad_scale, reducer->ReadyFn());
  RETURN_IF_ERROR(reducer->Wait().WithContext("gradient reduction at step " +
                                              std::to_string(step)));
  return loss_sum;
}

// Per-step figures of one mode, as medians over the measured steps.
struct Result {
  double step_s = 0, comm_s = 0, exposed_s = 0;
  double codec_s = 0;  // the codec's CPU time outside the communicator (ReducerStats)
};

// Runs both modes interleaved in blocks of `block` steps (so load from the rest of
// the machine hits both alike), after 3 warm-up steps each, and returns the medians
// per step; each figure is the slowest rank's.
void RunBoth(Communicator* comm, Model* model, const Batch& batch, int steps, int block,
             double bucket_mib, double first_mib, const std::string& codec_name, Result* after,
             Result* overlapped) {
  std::unique_ptr<GradientCodec> codecs[2];
  std::unique_ptr<Reducer> reducers[2];
  for (int mode = 0; mode < 2; ++mode) {
    ReducerOptions o;
    o.overlap = mode == 1;
    o.bucket_mib = bucket_mib;
    o.first_bucket_mib = first_mib;
    o.collective.timeout = std::chrono::seconds(120);
    CodecOptions co;
    co.name = codec_name;
    co.powersgd_warmup_steps = 0;
    auto codec = MakeCodec(co);
    Check(codec.status(), "codec");
    codecs[mode] = std::move(codec).value();
    reducers[mode] = std::make_unique<Reducer>(comm, codecs[mode].get(), model->params(), o);
  }
  std::vector<double> step_t[2], comm_t[2], exposed_t[2], codec_t[2];
  int64_t step = 0;
  for (int done = -3; done < steps; done += block) {
    for (int mode = 0; mode < 2; ++mode) {
      for (int k = 0; k < (done < 0 ? 3 : block); ++k) {
        MPI_Barrier(MPI_COMM_WORLD);
        Stopwatch sw;
        auto loss = ForwardBackwardReduced(model, batch, 1.0f / batch.n, step++, reducers[mode].get());
        Check(loss.status(), "step");
        const double t = sw.Seconds();
        if (done < 0) continue;
        const ReducerStats st = reducers[mode]->stats();
        step_t[mode].push_back(t);
        comm_t[mode].push_back(st.last_comm_seconds);
        exposed_t[mode].push_back(st.last_exposed_comm_seconds);
        codec_t[mode].push_back(st.last_codec_compute_seconds);
      }
    }
  }
  Result* out[2] = {after, overlapped};
  for (int mode = 0; mode < 2; ++mode) {
    double mine[4] = {Median(step_t[mode]), Median(comm_t[mode]), Median(exposed_t[mode]), Median(codec_t[mode])};
    double most[4];
    MPI_Allreduce(mine, most, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    *out[mode] = {most[0], most[1], most[2], most[3]};
  }
}

int Main(int argc, char** argv) {
  std::string backend = "gloo", codec_name = "none";
  int batch_n = 64, steps = 40;
  double bucket_mib = ReducerOptions{}.bucket_mib, first_mib = ReducerOptions{}.first_bucket_mib;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--backend") backend = argv[i + 1];
    else if (a == "--batch") batch_n = std::atoi(argv[i + 1]);
    else if (a == "--steps") steps = std::atoi(argv[i + 1]);
    else if (a == "--bucket-mib") bucket_mib = std::atof(argv[i + 1]);
    else if (a == "--first-mib") first_mib = std::atof(argv[i + 1]);
    else if (a == "--codec") codec_name = argv[i + 1];
  }
  auto mpi = MakeMpiCommunicator();
  Check(mpi.status(), "mpi");
  const int rank = (*mpi)->rank(), world = (*mpi)->size();
  std::unique_ptr<Communicator> gloo;
  Communicator* comm = mpi->get();
  if (backend == "gloo") {
    long long stamp = rank == 0 ? static_cast<long long>(UnixMillis()) : 0;
    MPI_Bcast(&stamp, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
    FileKvStore kv("/tmp/shoal-overlap-bench-" + std::to_string(stamp));
    auto made = MakeGlooCommunicator(rank, world, &kv, "bench/", std::chrono::seconds(60));
    Check(made.status(), "gloo");
    gloo = std::move(made).value();
    comm = gloo.get();
  }
  // Two ranks share the machine's cores: one BLAS thread each.
  SetBlasThreads(1);
  auto model = MakeMlp({784, 2048, 2048, 10}, 7);
  Check(model.status(), "model");
  std::mt19937 rng(rank + 1);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(batch_n) * 784);
  std::vector<int32_t> y(batch_n);
  for (float& v : x) v = nd(rng);
  for (int32_t& v : y) v = static_cast<int32_t>(rng() % 10);
  const Batch batch{x.data(), y.data(), batch_n};

  Result after, overlapped;
  RunBoth(comm, model->get(), batch, steps, 5, bucket_mib, first_mib, codec_name, &after, &overlapped);
  if (rank == 0) {
    const char* bw = std::getenv("SHOAL_EMULATE_BANDWIDTH_MBPS");
    std::printf("overlap: MLP 784-2048-2048-10 (%.1f MB of gradients), %d ranks, %s, batch %d/rank, "
                "median of %d steps, buckets %g/%g MiB, codec %s, emulated bandwidth %s Mbit/s\n",
                (*model)->num_parameters() * 4 / 1e6, world, comm->backend().c_str(), batch_n,
                steps, bucket_mib, first_mib, codec_name.c_str(), bw && *bw ? bw : "off");
    std::printf("  no overlap: step %7.1f ms, comm %7.1f ms (all exposed %7.1f ms)\n",
                after.step_s * 1e3, after.comm_s * 1e3, after.exposed_s * 1e3);
    std::printf("  overlap   : step %7.1f ms, comm %7.1f ms, exposed %7.1f ms\n",
                overlapped.step_s * 1e3, overlapped.comm_s * 1e3, overlapped.exposed_s * 1e3);
    std::printf("  exposed(overlap) / comm(no overlap) = %.3f   step speed-up %.2fx\n",
                overlapped.exposed_s / after.comm_s, after.step_s / overlapped.step_s);
    // Measured inside the training run, on the communication thread, while backward and
    // the other rank share the machine: the codec's CPU time outside its collectives.
    std::printf("  codec %s compute: %.2f ms per step = %.1f%% of the step (no overlap: %.2f ms = %.1f%%)\n",
                codec_name.c_str(), overlapped.codec_s * 1e3, 100 * overlapped.codec_s / overlapped.step_s,
                after.codec_s * 1e3, 100 * after.codec_s / after.step_s);
  }
  gloo.reset();
  mpi->reset();
  FinalizeMpiIfInitialized();
  return 0;
}

}  // namespace
}  // namespace shoal

int main(int argc, char** argv) { return shoal::Main(argc, argv); }

// codec_bench: per codec, on one bucket shaped like an MLP 784-2048-2048-10's
// gradients, the bytes each rank puts on the wire per step against an f32 allreduce,
// encode+decode time on one thread, and the relative error. Not a test; prints a table.
//
//   codec_bench [--world N] [--steps S] [--codecs none,bf16,...] [--scalar 1]
//   (codecs also: qblock8, qblock4, bf16-noef and fp16-noef, the casts without error feedback)
//               [--layers 784,2048,2048,10]
//
// --scalar 1 turns off the AVX2 kernels (SetAvx2ForTesting), for comparison.
//
// Gradients are synthetic (see Gradient below): shared low-rank directions plus
// per-rank noise, as data-parallel workers' gradients are; "err 1 step" is the
// relative L2 error of one Reduce from fresh state, "err mean" that of the mean output
// over all steps with the same gradients (error feedback at work). "codec ms" is Reduce
// at world size 1, where every collective is a no-op or a copy, so it is the codec's own
// compute (OpenBLAS held to one thread), in thread CPU time, median over the steps;
// "GB/s" is the f32 bucket size over it and "x memcpy" the median over steps of a
// memcpy of the same bytes timed just before each Reduce, divided by that Reduce's time
// (issue 3's yardstick: encode + decode at 0.5x memcpy or better). "1MiB" repeats both
// on a bucket of up to 1 MiB (the Reducer's first
// bucket; the first rows of fc1.w), which stays in cache where the big one
// streams from memory. "step ms" is the wall time of Reduce at the given world size
// over loopback Gloo (ranks are threads).
#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include "collectives/compression/codec_internal.h"
#include "collectives/dtype.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"
#include "common/clock.h"
#include "common/median.h"

extern "C" void openblas_set_num_threads(int);

namespace shoal::compression {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Model {
  std::vector<TensorSlice> tensors;
  size_t count = 0;
  void Add(const char* name, size_t rows, size_t cols) {
    tensors.push_back({name, count, rows, cols});
    count += rows * cols;
  }
};

// Data-parallel workers see noisy estimates of the same gradient: each matrix is a
// rank-8 product shared by all ranks, singular values falling as 1/(j+1), plus noise
// of rms 0.1 drawn per rank; biases are shared 0.5 plus the noise.
std::vector<float> Gradient(const Model& m, int rank) {
  std::vector<float> g(m.count);
  const uint64_t key = StreamKey({42, static_cast<uint64_t>(rank)});
  for (size_t i = 0; i < m.count; ++i) g[i] = 0.1f * NormalAt(key, i);
  for (uint32_t t = 0; t < m.tensors.size(); ++t) {
    const TensorSlice& s = m.tensors[t];
    if (s.rows < 2) {
      for (size_t i = 0; i < s.numel(); ++i) g[s.offset + i] += 0.5f;
      continue;
    }
    const int k = 8;
    std::vector<float> u(s.rows * k), v(s.cols * k);
    const uint64_t ku = StreamKey({43, t});  // not the rank: shared directions
    for (size_t i = 0; i < u.size(); ++i) u[i] = NormalAt(ku, i) / float(i % k + 1);
    for (size_t i = 0; i < v.size(); ++i) v[i] = NormalAt(ku + 1, i) / std::sqrt(float(k));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.rows, s.cols, k, 1.0f, u.data(), k,
                v.data(), k, 1.0f, g.data() + s.offset, s.cols);
  }
  return g;
}

CodecOptions OptionsFor(const std::string& label) {
  CodecOptions o;
  o.name = label;
  o.powersgd_warmup_steps = 0;
  if (label == "qblock8") o.name = "qblock";
  if (label == "bf16-noef" || label == "fp16-noef") {  // error feedback off
    o.name = label.substr(0, 4);
    o.error_feedback = false;
  }
  if (label == "qblock4") {
    o.name = "qblock";
    o.qblock_bits = 4;
  }
  return o;
}

double RelError(const std::vector<float>& got, const std::vector<double>& truth) {
  double num = 0, den = 0;
  for (size_t i = 0; i < truth.size(); ++i) {
    num += (got[i] - truth[i]) * (got[i] - truth[i]);
    den += truth[i] * truth[i];
  }
  return std::sqrt(num / den);
}

// One codec's speed against memcpy, side by side: each step times a memcpy of the
// bucket's bytes and then the codec's Reduce of the bucket, so that both see the same
// machine (load from other tenants moves both alike); medians over the steps.
struct Speed {
  double codec_s = -1, memcpy_s = 0, ratio = 0;  // ratio: memcpy time / codec time
};

// Thread CPU time of Reduce of `label` at world size 1, where every collective is a
// no-op or a copy: the codec's own compute. Measured over `steps` steps after two that
// warm caches and the buffer pool (the first replaced residual comes back to the pool
// only at the end of the second step; before, each step faults a fresh bucket-sized
// buffer in, as a training job does only at its start). codec_s < 0 on failure.
Speed CodecSpeed(const std::string& label, const std::vector<float>& grad, size_t count,
                 const std::vector<TensorSlice>& tensors, int steps) {
  Speed out;
  MemoryKvStore kv;
  auto comm = MakeGlooCommunicator(0, 1, &kv, "bench1/" + label, 10s);
  auto codec = MakeCodec(OptionsFor(label));
  if (!comm.ok() || !codec.ok()) {
    std::fprintf(stderr, "%s: %s %s\n", label.c_str(), comm.status().ToString().c_str(),
                 codec.status().ToString().c_str());
    return out;
  }
  std::vector<double> codec_s, memcpy_s, ratio;
  std::vector<float> g(count), copy(count);
  std::memcpy(copy.data(), grad.data(), count * 4);  // faults the pages in
  constexpr int kWarmup = 2;
  for (int s = 0; s < kWarmup + steps; ++s) {
    double t0 = ThreadCpuSeconds();
    std::memcpy(copy.data(), grad.data(), count * 4);
    const double m = ThreadCpuSeconds() - t0;
    std::copy(grad.begin(), grad.begin() + count, g.begin());
    t0 = ThreadCpuSeconds();
    const Status st = (*codec)->Reduce(g.data(), count, tensors, 0, s, comm->get(), {});
    const double c = ThreadCpuSeconds() - t0;
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", label.c_str(), st.ToString().c_str());
      return out;
    }
    if (s < kWarmup) continue;
    codec_s.push_back(c);
    memcpy_s.push_back(m);
    ratio.push_back(m / c);
  }
  out.codec_s = Median(codec_s);
  out.memcpy_s = Median(memcpy_s);
  out.ratio = Median(ratio);
  return out;
}

int Main(int argc, char** argv) {
  int world = 2, steps = 5;
  std::string codecs = "none,bf16,fp16,powersgd,qblock8,qblock4,topk";
  std::string layers = "784,2048,2048,10";
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::printf(
          "usage: codec_bench [--world N=2] [--steps S=5] [--codecs LIST] [--layers W0,W1,...] [--scalar 1]\n"
          "  codecs: none,bf16,fp16,bf16-noef,fp16-noef,powersgd,qblock8,qblock4,topk\n"
          "  per codec: wire bytes against an f32 ring allreduce, encode+decode time on one thread\n"
          "  (also against memcpy of the same bytes, side by side), error, and step time over\n"
          "  loopback Gloo at --world ranks (threads)\n");
      return 0;
    }
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--world") world = std::atoi(argv[i + 1]);
    else if (flag == "--steps") steps = std::atoi(argv[i + 1]);
    else if (flag == "--codecs") codecs = argv[i + 1];
    else if (flag == "--layers") layers = argv[i + 1];
    else if (flag == "--scalar") SetAvx2ForTesting(std::atoi(argv[i + 1]) == 0);
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (world < 1 || steps < 1) return 2;
  openblas_set_num_threads(1);

  // The MLP's layers as one bucket, weights then bias per layer.
  Model m;
  {
    std::vector<size_t> widths;
    std::stringstream in(layers);
    std::string w;
    while (std::getline(in, w, ',')) widths.push_back(std::strtoul(w.c_str(), nullptr, 10));
    if (widths.size() < 2) {
      std::fprintf(stderr, "--layers needs at least two widths, got '%s'\n", layers.c_str());
      return 2;
    }
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
      const std::string name = "fc" + std::to_string(l + 1);
      m.Add((name + ".w").c_str(), widths[l], widths[l + 1]);
      m.Add((name + ".b").c_str(), 1, widths[l + 1]);
    }
  }
  std::vector<std::vector<float>> grads;
  std::vector<double> truth(m.count, 0.0);
  for (int r = 0; r < world; ++r) {
    grads.push_back(Gradient(m, r));
    for (size_t i = 0; i < m.count; ++i) truth[i] += grads[r][i];
  }
  const double mb = m.count * 4.0 / 1e6;
  // The small bucket: fc1.w's first rows, 1 MiB.
  const size_t small_cols = m.tensors[0].cols, small_rows = std::min<size_t>(m.tensors[0].rows, (size_t{1} << 18) / small_cols);
  const size_t small = small_rows * small_cols;
  const std::vector<TensorSlice> small_tensors = {{"fc1.w[:rows]", 0, small_rows, small_cols}};
  const int small_reps = 20;  // steps per small-bucket measurement: each is ~100x shorter
  std::printf("bucket: %zu floats (%.1f MB), world %d, %d steps; %s kernels; times are thread CPU time, "
              "medians; x memcpy is the median over steps of memcpy time / codec time, each step timing both\n",
              m.count, mb, world, steps, UseAvx2() ? "AVX2" : "scalar");
  std::printf("%-9s %14s %14s %8s %9s %7s %9s %10s %9s %11s %11s %10s\n", "codec", "sent B/step",
              "f32 ring B", "ratio", "codec ms", "GB/s", "x memcpy", "1MiB GB/s", "x memcpy",
              "err 1 step", "err mean", "step ms");

  std::stringstream list(codecs);
  std::string label;
  while (std::getline(list, label, ',')) {
    const Speed big_speed = CodecSpeed(label, grads[0], m.count, m.tensors, steps);
    const Speed small_speed = CodecSpeed(label, grads[0], small, small_tensors, steps * small_reps);
    if (big_speed.codec_s < 0 || small_speed.codec_s < 0) return 1;
    const double codec_s = big_speed.codec_s, small_s = small_speed.codec_s;
    // The real reduction over `world` ranks on loopback.
    MemoryKvStore kv;
    std::vector<int64_t> sent(world, 0), uncompressed(world, 0);
    std::vector<double> step_s(world, 0);
    double err1 = 0, err_mean = 0;
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        auto comm = MakeGlooCommunicator(r, world, &kv, "bench/" + label, 30s);
        auto codec = MakeCodec(OptionsFor(label));
        if (!comm.ok() || !codec.ok()) return;
        std::vector<double> total(m.count, 0.0);
        const int64_t sent0 = (*comm)->bytes_sent();
        for (int s = 0; s < steps; ++s) {
          auto g = grads[r];
          const auto t0 = Clock::now();
          const Status st = (*codec)->Reduce(g.data(), m.count, m.tensors, 0, s, comm->get(), {});
          step_s[r] += Seconds(t0);
          if (!st.ok()) {
            std::fprintf(stderr, "%s rank %d: %s\n", label.c_str(), r, st.ToString().c_str());
            return;
          }
          if (r == 0 && s == 0) err1 = RelError(g, truth);
          for (size_t i = 0; r == 0 && i < m.count; ++i) total[i] += g[i];
        }
        sent[r] = (*comm)->bytes_sent() - sent0;
        uncompressed[r] = (*codec)->stats().bytes_uncompressed;
        if (r == 0) {
          std::vector<float> mean(m.count);
          for (size_t i = 0; i < m.count; ++i) mean[i] = static_cast<float>(total[i] / steps);
          err_mean = RelError(mean, truth);
        }
      });
    }
    for (auto& t : threads) t.join();
    const double per_step = double(sent[0]) / steps, base = double(uncompressed[0]) / steps;
    const double gbs = mb / 1e3 / codec_s, small_gbs = small * 4.0 / 1e9 / small_s;
    std::printf("%-9s %14.0f %14.0f %7.1fx %9.2f %7.2f %8.2fx %10.2f %8.2fx %11.2e %11.2e %10.1f\n",
                label.c_str(), per_step, base, per_step > 0 ? base / per_step : 0.0, codec_s * 1e3, gbs,
                big_speed.ratio, small_gbs, small_speed.ratio, err1, err_mean,
                step_s[0] / steps * 1e3);
  }
  return 0;
}

}  // namespace
}  // namespace shoal::compression

int main(int argc, char** argv) { return shoal::compression::Main(argc, argv); }

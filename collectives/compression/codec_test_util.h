// Helpers shared by the codec tests (Gloo ranks as threads, MPI ranks as processes):
// bucket layouts, per-rank inputs, one Reduce with everything error feedback needs to
// be checked, and the checks themselves, each tolerance with the reason for it.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "collectives/compression/codec_internal.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"
#include "collectives/test_util.h"

namespace shoal::compression::testing {

// Rank `rank` of `n` over Gloo (ranks as threads); null, with a test failure, if the
// rendezvous fails.
inline std::unique_ptr<Communicator> Connect(MemoryKvStore* kv, const std::string& prefix, int rank, int n) {
  auto comm = MakeGlooCommunicator(rank, n, kv, prefix, std::chrono::seconds(10));
  EXPECT_TRUE(comm.ok()) << comm.status().ToString();
  return comm.ok() ? std::move(comm).value() : nullptr;
}

struct Layout {
  std::string label;
  size_t count = 0;
  std::vector<TensorSlice> tensors;  // empty: one 1-D tensor
};

// Sizes 0, 1, odd, just past a qblock block, several blocks; and a mixed bucket with
// two matrices PowerSGD compresses (40x24: 3.75x, 24x33: 3.5x at rank 4), a small one
// it must not (5x3), a bias and a scalar.
inline std::vector<Layout> Layouts() {
  std::vector<Layout> out;
  for (size_t c : {size_t{0}, size_t{1}, size_t{7}, size_t{513}, size_t{4099}}) {
    out.push_back({"flat" + std::to_string(c), c, {}});
  }
  Layout mixed{"mixed", 0, {}};
  auto add = [&](const char* name, size_t rows, size_t cols) {
    mixed.tensors.push_back({name, mixed.count, rows, cols});
    mixed.count += rows * cols;
  };
  add("w1", 40, 24);
  add("b1", 1, 24);
  add("w2", 5, 3);
  add("s", 1, 1);
  add("w3", 24, 33);
  out.push_back(mixed);
  return out;
}

// Rank r's gradient for (salt): fractional values in [-1, 1), different per rank.
inline std::vector<float> Gradient(int rank, size_t count, uint64_t salt) {
  std::vector<float> g(count);
  const uint64_t key = StreamKey({salt, static_cast<uint64_t>(rank), 77});
  for (size_t i = 0; i < count; ++i) g[i] = 2.0f * UniformAt(key, i) - 1.0f;
  return g;
}

inline CodecOptions Options(const std::string& name) {
  CodecOptions o;
  o.name = name;
  if (name == "qblock4") {
    o.name = "qblock";
    o.qblock_bits = 4;
  }
  o.powersgd_warmup_steps = 1;  // step 0 uncompressed, later steps compressed
  o.topk_ratio = 0.1;
  o.topk_sample = 256;          // so that 513 and 4099 take the sampled path
  o.seed = 1234;
  o.record_contributions = true;
  return o;
}

inline std::unique_ptr<GradientCodec> Make(const CodecOptions& o) {
  auto codec = MakeCodec(o);
  EXPECT_TRUE(codec.ok()) << codec.status().ToString();
  return codec.ok() ? std::move(codec).value() : nullptr;
}

inline FeedbackCodec* Inspect(GradientCodec* c) { return dynamic_cast<FeedbackCodec*>(c); }

// One rank's view of one Reduce: x = input + the residual before the call.
struct Outcome {
  std::vector<float> x, out, contribution, residual;
};

inline Status Step(GradientCodec* codec, Communicator* comm, const Layout& layout,
                   const std::vector<float>& input, uint64_t bucket_id, int64_t step,
                   Outcome* o, CollectiveOptions opts = {}) {
  FeedbackCodec* f = Inspect(codec);
  const StateKey rkey{StateKind::kResidual, bucket_id, 0};
  const auto before = f->StateEntry(rkey);
  o->x = input;
  if (before) {
    for (size_t i = 0; i < input.size(); ++i) o->x[i] += (*before)[i];
  }
  o->out = input;
  RETURN_IF_ERROR(codec->Reduce(o->out.data(), layout.count, layout.tensors, bucket_id, step, comm,
                                opts));
  o->contribution = f->LastContribution(bucket_id).value_or(std::vector<float>());
  if (o->contribution.empty()) o->contribution.assign(layout.count, 0.0f);
  o->residual = f->StateEntry(rkey).value_or(std::vector<float>(layout.count, 0.0f));
  return OkStatus();
}

inline bool IsCast(const std::string& name) { return name == "bf16" || name == "fp16"; }
inline DType CastType(const std::string& name) { return name == "bf16" ? DType::kBF16 : DType::kF16; }

// Checks one Reduce across all ranks' outcomes. `inputs_only` says x == input (no
// residual yet), so `none` and the casts can be compared with the exact sum.
inline void CheckStep(const std::string& codec, const std::vector<Outcome>& all,
                      const std::string& where, bool inputs_only) {
  const int n = static_cast<int>(all.size());
  const size_t count = all[0].out.size();
  double scale = 0;  // largest |x| anywhere: the unit of f32 rounding below
  for (const Outcome& o : all) {
    for (float v : o.x) scale = std::max(scale, double(std::fabs(v)));
  }
  int bad = 0;
  for (int r = 0; r < n && bad < 5; ++r) {
    // Replicas must be bit-identical or data-parallel training drifts apart.
    if (all[r].out != all[0].out) {
      ADD_FAILURE() << where << ": rank " << r << " output differs from rank 0";
      ++bad;
    }
    ASSERT_EQ(all[r].contribution.size(), count) << where;
    ASSERT_EQ(all[r].residual.size(), count) << where;
    // Conservation per rank: x = contribution + residual. Each side is one or two f32
    // operations away from the other (e.g. residual = x - c, or x - c rounded then
    // added back): 1e-6 of the magnitudes involved is a few ulps.
    for (size_t i = 0; i < count && bad < 5; ++i) {
      const double lhs = all[r].x[i], c = all[r].contribution[i], res = all[r].residual[i];
      const double tol = 1e-6 * (std::fabs(lhs) + std::fabs(c) + std::fabs(res)) + 1e-30;
      if (std::fabs(lhs - (c + res)) > tol) {
        ADD_FAILURE() << where << ": rank " << r << " element " << i << ": x " << lhs
                      << " != contribution " << c << " + residual " << res;
        ++bad;
      }
    }
  }
  for (size_t i = 0; i < count && bad < 5; ++i) {
    double sum_c = 0, mag_c = 0, sum_x = 0, mag_x = 0;
    for (const Outcome& o : all) {
      sum_c += o.contribution[i];
      mag_c += std::fabs(o.contribution[i]);
      sum_x += o.x[i];
      mag_x += std::fabs(o.x[i]);
    }
    const double got = all[0].out[i];
    double tol;
    if (IsCast(codec)) {
      // The contributions are exactly representable after scaling; the reduction then
      // rounds n-1 partial sums to the wire type (Gloo's ring; MPI once), each within
      // u * sum|c| after scaling back by n: the backend's own bound, test_util.h.
      tol = ::shoal::testing::Tolerance(CastType(codec), n, mag_c);
    } else {
      // none, PowerSGD, qblock, top-k: the output is the sum of the contributions up
      // to f32 rounding of sums and of rank-r products (PowerSGD's P^Q^T has r terms
      // per element, each bounded by the largest input): 1e-5 * n * max|x|.
      tol = 1e-5 * (mag_c + n * scale) + 1e-30;
    }
    if (std::fabs(got - sum_c) > tol) {
      ADD_FAILURE() << where << ": element " << i << ": output " << got
                    << " != sum of contributions " << sum_c << " (tol " << tol << ")";
      ++bad;
    }
    if (!inputs_only) continue;
    if (codec == "none") {
      // f32 ring: n-1 additions, each within 2^-24 of a partial sum <= sum|x|.
      tol = 1e-5 * mag_x;
    } else if (IsCast(codec)) {
      // One rounding of x/n to the wire type (<= u/2 * |x| after scaling back) plus
      // the reduction's n-1 (above): within n*u*sum|x|, i.e. Tolerance with one more
      // rounding. fp16 also flushes |x/n| < 2^-14 to subnormals spaced 2^-24: up to
      // 2^-25 absolute per rounding, n roundings, times n when scaling back.
      tol = ::shoal::testing::Tolerance(CastType(codec), n + 1, mag_x) +
            (codec == "fp16" ? n * n * std::ldexp(1.0, -25) : 0.0);
    } else {
      continue;  // lossy by design: conservation above is their contract
    }
    if (std::fabs(got - sum_x) > tol) {
      ADD_FAILURE() << where << ": element " << i << ": output " << got << " != reference "
                    << sum_x << " (tol " << tol << ")";
      ++bad;
    }
  }
}

// Bytes an f32 ring allreduce sends per rank: the codecs' bytes_uncompressed unit.
inline int64_t UncompressedBytes(size_t count, int n) {
  return static_cast<int64_t>(count) * 4 * 2 * (n - 1) / n;
}

}  // namespace shoal::compression::testing

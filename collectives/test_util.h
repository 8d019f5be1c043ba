// Helpers shared by the collectives tests: ranks as threads (Gloo's spawnThreads),
// deterministic inputs per rank, and the reference reduction with its tolerance.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/dtype.h"

namespace shoal::testing {

// Runs fn(rank) for ranks 0..n-1, each on its own thread, and joins them all.
inline void RunRanks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

// A world of one without a transport, for codec tests on one rank: collectives are
// no-ops or copies (AllToAll is the base class's, over AllGather).
class LoopbackCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "loopback"; }
  Status AllReduce(void*, size_t, DType, ReduceOp, const CollectiveOptions&) override { return OkStatus(); }
  Status AllGather(const void* send, void* recv, size_t bytes, const CollectiveOptions&) override {
    std::memmove(recv, send, bytes);
    return OkStatus();
  }
  Status Broadcast(void*, size_t, int, const CollectiveOptions&) override { return OkStatus(); }
  Status Barrier(const CollectiveOptions&) override { return OkStatus(); }
  void Abort() override {}
};

// A rendezvous prefix no other test in this process uses.
inline std::string UniquePrefix(const std::string& base) {
  static std::atomic<int> counter{0};
  return "test/" + base + "/" + std::to_string(counter.fetch_add(1));
}

// Element i of rank r's input, representable in `dtype`. Integer-valued inputs lie
// in [-8, 8] so every partial sum is an exact small integer in all three dtypes;
// the others lie in [-1, 1) with (for 16-bit) full-width mantissas, to make the
// wire rounding visible.
inline float InputValue(DType dtype, int rank, size_t i, bool integer_valued) {
  const uint64_t h = (i * 2654435761u + static_cast<uint64_t>(rank) * 40503u + 17) % 100003;
  if (integer_valued) return static_cast<float>(static_cast<int>(h % 17) - 8);
  const float v = static_cast<float>(h) / 50001.5f - 1.0f;
  switch (dtype) {
    case DType::kBF16:
      return BF16ToF32(F32ToBF16(v));
    case DType::kF16:
      return F16ToF32(F32ToF16(v));
    case DType::kF32:
      break;
  }
  return v;
}

inline std::vector<char> MakeInput(DType dtype, int rank, size_t count, bool integer_valued) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = InputValue(dtype, rank, i, integer_valued);
  std::vector<char> buf(count * DTypeSize(dtype));
  FromF32(values.data(), dtype, buf.data(), count);
  return buf;
}

inline std::vector<float> Decode(const std::vector<char>& buf, DType dtype) {
  std::vector<float> out(buf.size() / DTypeSize(dtype));
  ToF32(buf.data(), dtype, out.data(), out.size());
  return out;
}

// The exact reduction (in double) and the sum of magnitudes that bounds rounding
// errors, both divided by n for kAverage; `sum` is the undivided exact sum.
struct Reference {
  std::vector<double> value;
  std::vector<double> magnitude;
  std::vector<double> sum;
};

inline Reference ReferenceReduce(DType dtype, int n, size_t count, ReduceOp op,
                                 bool integer_valued) {
  Reference ref{std::vector<double>(count, 0.0), std::vector<double>(count, 0.0), {}};
  for (int r = 0; r < n; ++r) {
    for (size_t i = 0; i < count; ++i) {
      const double x = InputValue(dtype, r, i, integer_valued);
      ref.value[i] += x;
      ref.magnitude[i] += std::fabs(x);
    }
  }
  ref.sum = ref.value;
  if (op == ReduceOp::kAverage) {
    for (size_t i = 0; i < count; ++i) {
      ref.value[i] /= n;
      ref.magnitude[i] /= n;
    }
  }
  return ref;
}

// Allowed |result - reference| for one element whose inputs have summed magnitude
// `magnitude` (a rounding of any partial sum p costs at most u*|p| <= u*magnitude):
//  * integer-valued inputs: 0. Sums are exact small integers; an average is one
//    correctly rounded f32 division, then (16-bit) one rounding, both computed the
//    same way as the reference below does (see ExpectedInteger).
//  * f32: n-1 additions and a division, each within 2^-24: well under the 1e-5 we
//    allow.
//  * bf16 (u = 2^-8) and f16 (u = 2^-11): the Gloo ring forwards n-2 partial sums
//    rounded to the wire dtype and rounds the result once more, n-1 roundings in
//    all, plus f32 accumulation: (n-1)*u + n*2^-24. For bf16 that is 1.2e-2 at
//    n = 4 (3.9e-3 at n = 2); MPI rounds once, which is within the same bound.
inline double Tolerance(DType dtype, int n, double magnitude) {
  const double f32_part = n * std::ldexp(1.0, -24) * magnitude;
  switch (dtype) {
    case DType::kF32:
      return 1e-5 * magnitude;
    case DType::kBF16:
      return (n - 1) * std::ldexp(1.0, -8) * magnitude + f32_part;
    case DType::kF16:
      return (n - 1) * std::ldexp(1.0, -11) * magnitude + f32_part;
  }
  return 0;
}

// For integer-valued inputs: the bit-exact expected element. The sum is exact in
// f32; an average divides it in f32 and rounds once to the dtype.
inline float ExpectedInteger(DType dtype, double exact_sum, int n, ReduceOp op) {
  float v = static_cast<float>(exact_sum);
  if (op == ReduceOp::kAverage) v /= static_cast<float>(n);
  switch (dtype) {
    case DType::kBF16:
      return BF16ToF32(F32ToBF16(v));
    case DType::kF16:
      return F16ToF32(F32ToF16(v));
    case DType::kF32:
      break;
  }
  return v;
}

// Bytes the Gloo ring allreduce sends from rank r: reduce-scatter sends chunk r-s
// and allgather chunk r+1-s for s = 0..n-2, chunk lengths as split by the ring
// (first count % n chunks one element longer). Received: chunks r-s-1 and r-s.
inline void RingBytes(size_t count, int n, int r, size_t esize, int64_t* sent,
                      int64_t* received) {
  std::vector<size_t> len(n, count / n);
  for (size_t i = 0; i < count % n; ++i) ++len[i];
  auto mod = [n](int a) { return ((a % n) + n) % n; };
  *sent = *received = 0;
  for (int s = 0; s < n - 1; ++s) {
    *sent += static_cast<int64_t>((len[mod(r - s)] + len[mod(r + 1 - s)]) * esize);
    *received += static_cast<int64_t>((len[mod(r - s - 1)] + len[mod(r - s)]) * esize);
  }
}

}  // namespace shoal::testing

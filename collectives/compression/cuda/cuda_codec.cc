// The device-bucket codecs. Each Reduce follows its CPU twin step for step (same keys,
// same message layout, same order of additions), so with the same inputs the result
// and the residual are the CPU codec's; new residuals are committed only on success.
// Not yet: checkpointing residuals (SaveState returns "", as after a membership reset).
#include "collectives/compression/cuda/cuda_codec.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

#include "collectives/compression/cuda/codec_host.h"
#include "collectives/compression/cuda/codec_kernels.h"
#include "common/nvml/cuda_check.h"

namespace shoal::gpu_codec {
namespace {

struct CudaFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DevPtr = std::unique_ptr<void, CudaFree>;

StatusOr<DevPtr> Alloc(size_t bytes) {
  void* p = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&p, std::max<size_t>(bytes, 1)));
  return DevPtr(p);
}
template <typename T>
T* As(const DevPtr& p) {
  return static_cast<T*>(p.get());
}

class CudaCodec : public GradientCodec {
 public:
  CudaCodec(CodecOptions o, cudaStream_t s) : o_(std::move(o)), s_(s) {}
  std::string name() const override { return o_.name; }
  void ResetState() override {
    std::lock_guard<std::mutex> lock(mu_);
    residuals_.clear();
  }

  Status Reduce(float* bucket, size_t count, const std::vector<TensorSlice>& /*tensors*/, uint64_t bucket_id,
                int64_t step, Communicator* comm, const CollectiveOptions& opts) override {
    if (comm == nullptr) return InvalidArgument("cuda codec " + o_.name + ": communicator is null");
    std::lock_guard<std::mutex> lock(mu_);
    const int n = comm->size();
    CountUncompressed(count, n);
    if (count == 0) return OkStatus();
    if (o_.name == "none") return comm->AllReduce(bucket, count, DType::kF32, ReduceOp::kSum, opts);
    // The committed residual (or zeros) seeds the new one; the old stays if we fail.
    ASSIGN_OR_RETURN(DevPtr next, Alloc(count * sizeof(float)));
    auto it = residuals_.find(bucket_id);
    if (it != residuals_.end() && it->second.second != count) {
      return InvalidArgument("cuda codec " + o_.name + ": bucket " + std::to_string(bucket_id) +
                             " changed size without ResetState()");
    }
    if (it != residuals_.end()) {
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(next.get(), it->second.first.get(), count * 4, cudaMemcpyDeviceToDevice, s_));
    } else {
      CUDA_RETURN_IF_ERROR(cudaMemsetAsync(next.get(), 0, count * 4, s_));
    }
    Status st;
    if (o_.name == "bf16" || o_.name == "fp16") {
      st = Cast(bucket, count, o_.name == "bf16" ? DType::kBF16 : DType::kF16, As<float>(next), comm, opts);
    } else if (o_.name == "qblock" || o_.name == "topk") {
      // next = x = bucket + residual; the codec turns it into the new residual.
      RETURN_IF_ERROR(AddInto(As<float>(next), bucket, count, s_));
      if (o_.name == "topk") {
        st = TopK(bucket, count, As<float>(next), bucket_id, step, comm, opts);
      } else {
        ASSIGN_OR_RETURN(DevPtr x, Alloc(count * 4));  // qblock reads x after writing the residual
        CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(x.get(), next.get(), count * 4, cudaMemcpyDeviceToDevice, s_));
        st = QBlock(bucket, count, As<float>(x), As<float>(next), bucket_id, step, comm, opts);
      }
    } else {
      return Unimplemented("cuda codec " + o_.name + " is not available on the GPU yet");
    }
    RETURN_IF_ERROR(st);
    RETURN_IF_ERROR(ZeroNonFinite(As<float>(next), count, s_));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s_));
    residuals_[bucket_id] = {std::move(next), count};
    return OkStatus();
  }

 private:
  Status Cast(float* bucket, size_t count, DType wire, float* residual, Communicator* comm,
              const CollectiveOptions& opts) {
    ASSIGN_OR_RETURN(DevPtr w, Alloc(count * 2));
    RETURN_IF_ERROR(CastEncode(bucket, residual, w.get(), count, wire, comm->size(), s_));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s_));  // the communicator runs on its own stream
    RETURN_IF_ERROR(comm->AllReduce(w.get(), count, wire, ReduceOp::kSum, opts));
    return CastDecode(w.get(), bucket, count, wire, comm->size(), s_);
  }

  // Two allgathers: everyone's quantised x, then each owner's requantised sum of its
  // run of blocks. The CPU codec's first stage is an AllToAll instead (n-1 times fewer
  // bytes); the sums, and so the results, are the same.
  Status QBlock(float* bucket, size_t count, const float* x, float* residual, uint64_t bucket_id, int64_t step,
                Communicator* comm, const CollectiveOptions& opts) {
    const int n = comm->size(), me = comm->rank(), bits = o_.qblock_bits;
    const size_t block = o_.qblock_block;
    const uint64_t ustep = static_cast<uint64_t>(step);
    std::vector<size_t> begin(n + 1);
    size_t largest = 0;
    for (int s = 0; s <= n; ++s) begin[s] = QRunBegin(s, n, count, block);
    for (int s = 0; s < n; ++s) largest = std::max(largest, begin[s + 1] - begin[s]);
    const size_t full = QuantBytes(count, block, bits);
    ASSIGN_OR_RETURN(DevPtr mine, Alloc(full));
    ASSIGN_OR_RETURN(DevPtr all, Alloc(full * n));
    RETURN_IF_ERROR(QBlockQuantize(x, count, block, bits, StreamKey({o_.seed, uint64_t(me), ustep, bucket_id, 1}),
                                   As<uint8_t>(mine), residual, s_));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s_));
    RETURN_IF_ERROR(comm->AllGather(mine.get(), all.get(), full, opts));

    const size_t own0 = begin[me], own_len = begin[me + 1] - begin[me];
    const size_t own_at = QuantBytes(own0, block, bits);
    ASSIGN_OR_RETURN(DevPtr sum, Alloc(own_len * 4));
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(sum.get(), 0, own_len * 4, s_));
    for (int p = 0; p < n; ++p) {  // rank order, as the CPU owner adds
      if (p == me) {
        RETURN_IF_ERROR(AddInto(As<float>(sum), x + own0, own_len, s_));
      } else {
        RETURN_IF_ERROR(QBlockDequantize(As<uint8_t>(all) + p * full + own_at, own_len, block, bits, As<float>(sum),
                                         true, s_));
      }
    }
    const size_t run_bytes = QuantBytes(largest, block, bits);
    ASSIGN_OR_RETURN(DevPtr requant, Alloc(run_bytes));
    ASSIGN_OR_RETURN(DevPtr runs, Alloc(run_bytes * n));
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(requant.get(), 0, run_bytes, s_));
    // The owned run's residual is the requantisation error sum - decode(requant).
    RETURN_IF_ERROR(QBlockQuantize(As<float>(sum), own_len, block, bits,
                                   StreamKey({o_.seed, uint64_t(me), ustep, bucket_id, 2}), As<uint8_t>(requant),
                                   residual + own0, s_));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s_));
    RETURN_IF_ERROR(comm->AllGather(requant.get(), runs.get(), run_bytes, opts));
    for (int s = 0; s < n; ++s) {
      RETURN_IF_ERROR(QBlockDequantize(As<uint8_t>(runs) + s * run_bytes, begin[s + 1] - begin[s], block, bits,
                                       bucket + begin[s], false, s_));
    }
    return OkStatus();
  }

  // Counts, then max-count (index, value) pairs per rank, summed in rank order.
  // `x` holds bucket + residual; TopkSelect zeroes the chosen entries, leaving the residual.
  Status TopK(float* bucket, size_t count, float* x, uint64_t bucket_id, int64_t step, Communicator* comm,
              const CollectiveOptions& opts) {
    const int n = comm->size(), me = comm->rank();
    const size_t k = TopkK(count, o_.topk_ratio);
    ASSIGN_OR_RETURN(DevPtr pairs, Alloc(k * sizeof(TopkPair)));
    ASSIGN_OR_RETURN(const size_t mine,
                     TopkSelect(x, count, o_.topk_ratio, o_.topk_sample,
                                StreamKey({o_.seed, uint64_t(me), uint64_t(step), bucket_id, 3}), As<TopkPair>(pairs), s_));
    ASSIGN_OR_RETURN(DevPtr counts_dev, Alloc(n * sizeof(uint32_t)));
    ASSIGN_OR_RETURN(DevPtr mine_dev, Alloc(sizeof(uint32_t)));
    const uint32_t mine32 = static_cast<uint32_t>(mine);
    CUDA_RETURN_IF_ERROR(cudaMemcpy(mine_dev.get(), &mine32, 4, cudaMemcpyHostToDevice));
    RETURN_IF_ERROR(comm->AllGather(mine_dev.get(), counts_dev.get(), 4, opts));
    std::vector<uint32_t> counts(n);
    CUDA_RETURN_IF_ERROR(cudaMemcpy(counts.data(), counts_dev.get(), n * 4, cudaMemcpyDeviceToHost));
    const uint32_t most = *std::max_element(counts.begin(), counts.end());
    if (most > k) return Internal("cuda codec topk: a rank sent more pairs than k; ranks disagree on options");
    ASSIGN_OR_RETURN(DevPtr all, Alloc(size_t(most) * n * sizeof(TopkPair)));
    if (most > mine) {
      CUDA_RETURN_IF_ERROR(cudaMemsetAsync(As<TopkPair>(pairs) + mine, 0, (most - mine) * sizeof(TopkPair), s_));
    }
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s_));
    RETURN_IF_ERROR(comm->AllGather(pairs.get(), all.get(), most * sizeof(TopkPair), opts));
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(bucket, 0, count * 4, s_));
    for (int p = 0; p < n; ++p) {
      RETURN_IF_ERROR(TopkScatterAdd(As<TopkPair>(all) + size_t(p) * most, counts[p], bucket, s_));
    }
    return OkStatus();
  }

  const CodecOptions o_;
  cudaStream_t s_;
  std::mutex mu_;
  std::map<uint64_t, std::pair<DevPtr, size_t>> residuals_;
};

}  // namespace

StatusOr<std::unique_ptr<GradientCodec>> MakeCudaCodec(const CodecOptions& options, cudaStream_t stream) {
  const std::string& nm = options.name;
  if (nm == "powersgd") return Unimplemented("cuda codec powersgd: not available on the GPU yet");
  if (nm != "none" && nm != "bf16" && nm != "fp16" && nm != "qblock" && nm != "topk") {
    return InvalidArgument("unknown codec '" + nm + "'");
  }
  if (nm == "qblock" && ((options.qblock_bits != 4 && options.qblock_bits != 8) || options.qblock_block == 0)) {
    return InvalidArgument("codec qblock: bits must be 4 or 8 and the block positive");
  }
  if (nm == "topk" && !(options.topk_ratio > 0 && options.topk_ratio <= 1)) {
    return InvalidArgument("codec topk: ratio must be in (0, 1]");
  }
  return std::unique_ptr<GradientCodec>(std::make_unique<CudaCodec>(options, stream));
}

}  // namespace shoal::gpu_codec

// GradientCodec over device buckets: the CPU codecs' algorithms (none, bf16, fp16,
// qblock, topk) with their kernels from codec_kernels.h, for a communicator that takes
// device pointers (NcclCommunicator). Residuals live on the device.
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "collectives/compression/codec.h"

namespace shoal::gpu_codec {

// `stream` runs the codec's kernels; it is synchronised before each collective, so the
// communicator may use its own stream. PowerSGD is not offered yet (its products and
// Gram-Schmidt kernels exist; the factor bookkeeping does not): kUnimplemented.
StatusOr<std::unique_ptr<GradientCodec>> MakeCudaCodec(const CodecOptions& options, cudaStream_t stream);

}  // namespace shoal::gpu_codec

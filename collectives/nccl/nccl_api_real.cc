// The real NcclApi: each method is one NCCL or CUDA runtime call, checked where it is
// made and turned into a Status carrying file:line and the library's own message.
#include <nccl.h>

#include <cstring>

#include "collectives/nccl/nccl_api.h"
#include "common/nvml/cuda_check.h"
#include "common/nvml/cuda_device.h"

// ncclInProgress is success for non-blocking communicators: the call was accepted and
// finishes asynchronously (completion is polled with ncclCommGetAsyncError).
#define NCCL_RETURN_IF_ERROR(expr)                                                                    \
  do {                                                                                                \
    const ncclResult_t _shoal_nccl_rc = (expr);                                                       \
    if (_shoal_nccl_rc != ncclSuccess && _shoal_nccl_rc != ncclInProgress) {                          \
      return ::shoal::GpuCallError("NCCL", #expr, static_cast<long>(_shoal_nccl_rc),                  \
                                   ncclGetErrorString(_shoal_nccl_rc), __FILE__, __LINE__);           \
    }                                                                                                 \
  } while (0)

namespace shoal::nccl {
namespace {

ncclDataType_t ToNccl(DType t) {
  switch (t) {
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kF32:
      break;
  }
  return ncclFloat32;
}

class RealApi : public NcclApi {
 public:
  int DeviceCount() override { return ProbeCudaDevices().device_count; }
  Status SetDevice(int device) override {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    return OkStatus();
  }

  Status GetUniqueId(std::string* id) override {
    ncclUniqueId uid;
    NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&uid));
    id->assign(uid.internal, sizeof(uid.internal));
    return OkStatus();
  }
  Status CommInitRank(int nranks, const std::string& id, int rank, CommHandle* comm) override {
    ncclUniqueId uid;
    if (id.size() != sizeof(uid.internal)) {
      return DataLoss("nccl unique id has " + std::to_string(id.size()) + " bytes, expected " +
                      std::to_string(sizeof(uid.internal)));
    }
    std::memcpy(uid.internal, id.data(), id.size());
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // every call returns at once, so the watchdog can always abort
    ncclComm_t c = nullptr;
    NCCL_RETURN_IF_ERROR(ncclCommInitRankConfig(&c, nranks, uid, rank, &config));
    *comm = c;
    return OkStatus();
  }
  AsyncState CommGetAsyncError(CommHandle comm, std::string* error) override {
    ncclResult_t async = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(static_cast<ncclComm_t>(comm), &async);
    if (rc != ncclSuccess) async = rc;
    if (async == ncclSuccess) return AsyncState::kReady;
    if (async == ncclInProgress) return AsyncState::kInProgress;
    const char* last = ncclGetLastError(static_cast<ncclComm_t>(comm));
    *error = std::string(ncclGetErrorString(async)) + (last && *last ? std::string(": ") + last : "");
    return AsyncState::kError;
  }
  void CommAbort(CommHandle comm) override { (void)ncclCommAbort(static_cast<ncclComm_t>(comm)); }
  Status CommFinalize(CommHandle comm) override {
    NCCL_RETURN_IF_ERROR(ncclCommFinalize(static_cast<ncclComm_t>(comm)));
    return OkStatus();
  }
  Status CommDestroy(CommHandle comm) override {
    NCCL_RETURN_IF_ERROR(ncclCommDestroy(static_cast<ncclComm_t>(comm)));
    return OkStatus();
  }

  Status GroupStart() override {
    NCCL_RETURN_IF_ERROR(ncclGroupStart());
    return OkStatus();
  }
  Status GroupEnd() override {
    NCCL_RETURN_IF_ERROR(ncclGroupEnd());
    return OkStatus();
  }
  Status AllReduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op, CommHandle comm,
                   StreamHandle stream) override {
    NCCL_RETURN_IF_ERROR(ncclAllReduce(send, recv, count, ToNccl(dtype), op == ReduceOp::kSum ? ncclSum : ncclAvg,
                                       static_cast<ncclComm_t>(comm), static_cast<cudaStream_t>(stream)));
    return OkStatus();
  }
  Status AllGather(const void* send, void* recv, size_t bytes, CommHandle comm, StreamHandle stream) override {
    NCCL_RETURN_IF_ERROR(ncclAllGather(send, recv, bytes, ncclUint8, static_cast<ncclComm_t>(comm),
                                       static_cast<cudaStream_t>(stream)));
    return OkStatus();
  }
  Status Broadcast(const void* send, void* recv, size_t bytes, int root, CommHandle comm,
                   StreamHandle stream) override {
    NCCL_RETURN_IF_ERROR(ncclBroadcast(send, recv, bytes, ncclUint8, root, static_cast<ncclComm_t>(comm),
                                       static_cast<cudaStream_t>(stream)));
    return OkStatus();
  }

  Status StreamCreate(StreamHandle* stream) override {
    cudaStream_t s = nullptr;
    // Non-blocking w.r.t. the legacy default stream: reductions must not serialise
    // behind unrelated default-stream work of the model.
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    *stream = s;
    return OkStatus();
  }
  void StreamDestroy(StreamHandle stream) override { (void)cudaStreamDestroy(static_cast<cudaStream_t>(stream)); }
  Status EventCreate(EventHandle* event) override {
    cudaEvent_t e = nullptr;
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    *event = e;
    return OkStatus();
  }
  void EventDestroy(EventHandle event) override { (void)cudaEventDestroy(static_cast<cudaEvent_t>(event)); }
  Status EventRecord(EventHandle event, StreamHandle stream) override {
    CUDA_RETURN_IF_ERROR(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
    return OkStatus();
  }
  Status StreamWaitEvent(StreamHandle stream, EventHandle event) override {
    CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0));
    return OkStatus();
  }
  StatusOr<bool> EventDone(EventHandle event) override {
    const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (e == cudaErrorNotReady) return false;
    CUDA_RETURN_IF_ERROR(e);
    return true;
  }

  StatusOr<bool> IsDevicePointer(const void* p) override {
    cudaPointerAttributes attr{};
    CUDA_RETURN_IF_ERROR(cudaPointerGetAttributes(&attr, p));
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
  }
  Status Malloc(void** p, size_t bytes) override {
    CUDA_RETURN_IF_ERROR(cudaMalloc(p, bytes));
    return OkStatus();
  }
  void Free(void* p) override { (void)cudaFree(p); }
  Status MemcpyAsync(void* dst, const void* src, size_t bytes, StreamHandle stream) override {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream)));
    return OkStatus();
  }
  Status Memcpy(void* dst, const void* src, size_t bytes) override {
    CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    return OkStatus();
  }
};

}  // namespace

std::shared_ptr<NcclApi> RealNcclApi() {
  static const auto api = std::make_shared<RealApi>();
  return api;
}

}  // namespace shoal::nccl

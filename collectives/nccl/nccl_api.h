// The thin seam between NcclCommunicator and the NCCL / CUDA runtime libraries. The real
// implementation forwards to nccl* / cuda*; tests substitute a fake that can keep a peer
// from arriving, raise async errors, or never finish an operation, all on a CPU.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "collectives/communicator.h"
#include "common/status.h"

namespace shoal::nccl {

// Opaque handles: ncclComm_t, cudaStream_t and cudaEvent_t in the real implementation.
using CommHandle = void*;
using StreamHandle = void*;
using EventHandle = void*;

// What ncclCommGetAsyncError reports for a non-blocking communicator.
enum class AsyncState { kReady, kInProgress, kError };

class NcclApi {
 public:
  virtual ~NcclApi() = default;

  // Device count; 0 (with OK) where there is no usable GPU or driver.
  virtual int DeviceCount() = 0;
  virtual Status SetDevice(int device) = 0;

  // The rank-0 rendezvous token (NCCL_UNIQUE_ID_BYTES raw bytes).
  virtual Status GetUniqueId(std::string* id) = 0;
  // Non-blocking (ncclConfig_t.blocking = 0): returns at once; completion shows up as
  // AsyncState::kReady from CommGetAsyncError.
  virtual Status CommInitRank(int nranks, const std::string& id, int rank, CommHandle* comm) = 0;
  // kError comes with the library's message in *error.
  virtual AsyncState CommGetAsyncError(CommHandle comm, std::string* error) = 0;
  // Safe while operations are stuck; the handle is invalid afterwards.
  virtual void CommAbort(CommHandle comm) = 0;
  // Orderly teardown once no work is pending: finalize (may go on asynchronously, poll
  // CommGetAsyncError) then destroy.
  virtual Status CommFinalize(CommHandle comm) = 0;
  virtual Status CommDestroy(CommHandle comm) = 0;

  virtual Status GroupStart() = 0;
  virtual Status GroupEnd() = 0;
  // In non-blocking mode these may be queued rather than enqueued on `stream` yet; the
  // caller waits for AsyncState::kReady before recording events after them.
  virtual Status AllReduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op,
                           CommHandle comm, StreamHandle stream) = 0;
  virtual Status AllGather(const void* send, void* recv, size_t bytes_per_rank, CommHandle comm,
                           StreamHandle stream) = 0;
  virtual Status Broadcast(const void* send, void* recv, size_t bytes, int root, CommHandle comm,
                           StreamHandle stream) = 0;

  virtual Status StreamCreate(StreamHandle* stream) = 0;
  virtual void StreamDestroy(StreamHandle stream) = 0;
  virtual Status EventCreate(EventHandle* event) = 0;
  virtual void EventDestroy(EventHandle event) = 0;
  virtual Status EventRecord(EventHandle event, StreamHandle stream) = 0;
  virtual Status StreamWaitEvent(StreamHandle stream, EventHandle event) = 0;
  // true once all work before the record has finished; an error if that work failed.
  virtual StatusOr<bool> EventDone(EventHandle event) = 0;

  // Host buffers are staged through device scratch memory, so the CPU model and the
  // trainer's host gradients work with this backend unchanged.
  virtual StatusOr<bool> IsDevicePointer(const void* p) = 0;
  virtual Status Malloc(void** p, size_t bytes) = 0;
  virtual void Free(void* p) = 0;
  virtual Status MemcpyAsync(void* dst, const void* src, size_t bytes, StreamHandle stream) = 0;
  // Synchronous copy, used only once the work producing `src` is known to be done.
  virtual Status Memcpy(void* dst, const void* src, size_t bytes) = 0;
};

// Forwards to NCCL and the CUDA runtime (nccl_api_real.cc).
std::shared_ptr<NcclApi> RealNcclApi();

// Hex form of the unique id for the key-value store (which carries text).
std::string HexEncode(const std::string& bytes);
StatusOr<std::string> HexDecode(const std::string& hex);

}  // namespace shoal::nccl

// The data plane's one interface: every backend (gloo/, mpi/, nccl/) implements it.
// Calls are collective: every rank of the generation makes the same calls in the same
// order. Each call takes CollectiveOptions with a timeout, and never hangs past it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace shoal {

enum class DType { kF32, kBF16, kF16 };
enum class ReduceOp { kSum, kAverage };

size_t DTypeSize(DType t);
const char* DTypeName(DType t);

struct CollectiveOptions {
  std::chrono::milliseconds timeout{60'000};
  uint32_t tag = 0;  // distinguishes concurrent operations (e.g. fusion buckets)
};

// What actually crossed the transport boundary, in bytes (allgather fan-in included).
struct ByteCounters {
  std::atomic<int64_t> sent{0};
  std::atomic<int64_t> received{0};
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  // In place. bf16/f16 are accumulated in f32. kAverage divides by size().
  virtual Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op,
                           const CollectiveOptions& opts) = 0;
  // recv holds size() * bytes_per_rank bytes, rank r's contribution at r * bytes_per_rank.
  virtual Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                           const CollectiveOptions& opts) = 0;
  // Personalised exchange: `send` holds size() blocks of bytes_per_rank, block p going
  // to rank p; `recv` (same size, not overlapping `send`) gets rank p's block for this
  // rank at p * bytes_per_rank. A rank's own block is copied locally. Gloo and MPI send
  // each block straight to its rank: (n-1) * bytes_per_rank each way. The default below
  // is built from n-1 AllGather rounds and puts n-1 times more bytes on the wire; it is
  // for backends without point-to-point messages (and test doubles).
  virtual Status AllToAll(const void* send, void* recv, size_t bytes_per_rank,
                          const CollectiveOptions& opts);
  virtual Status Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) = 0;
  virtual Status Barrier(const CollectiveOptions& opts) = 0;

  // Safe from any thread: makes pending and later calls fail with kAborted promptly.
  virtual void Abort() = 0;

  // True if calls with different tags may run at once on different threads, each
  // matched with the same tag's calls on the other ranks whatever order the threads
  // issue them in (Gloo). MPI and NCCL match calls by issue order: false.
  virtual bool concurrent_tags() const { return false; }

  int64_t bytes_sent() const { return counters_.sent.load(); }
  int64_t bytes_received() const { return counters_.received.load(); }

 protected:
  ByteCounters counters_;
};

// Rendezvous data for building a communicator (Gloo addresses, the NCCL unique id):
// the coordinator serves it per job and generation; tests use an in-memory one.
class KvStore {
 public:
  virtual ~KvStore() = default;
  virtual Status Set(const std::string& key, const std::string& value) = 0;
  // Waits until `key` exists, up to `timeout`.
  virtual StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) = 0;
};

}  // namespace shoal

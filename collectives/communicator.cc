// Out-of-line pieces of the Communicator interface: dtype sizes and names, used by
// every backend for byte counts and error messages, and the AllGather-based AllToAll
// for backends that have no point-to-point messages.
#include "collectives/communicator.h"

#include <cstring>
#include <vector>

namespace shoal {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
  }
  return 0;  // unreachable for valid enumerators; callers treat 0 as invalid
}

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
  }
  return "unknown";
}

Status Communicator::AllToAll(const void* send, void* recv, size_t bytes_per_rank,
                              const CollectiveOptions& opts) {
  if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
    return InvalidArgument("AllToAll: null buffer");
  }
  const int n = size(), me = rank();
  const auto* in = static_cast<const char*>(send);
  auto* out = static_cast<char*>(recv);
  if (bytes_per_rank == 0) return OkStatus();
  std::memcpy(out + me * bytes_per_rank, in + me * bytes_per_rank, bytes_per_rank);
  // Round j: every rank allgathers its block for rank me + j, so rank q receives, at
  // slot q - j, the block rank q - j meant for it (and every other rank's copy too).
  std::vector<char> gathered(static_cast<size_t>(n) * bytes_per_rank);
  for (int j = 1; j < n; ++j) {
    const int to = (me + j) % n, from = (me - j + n) % n;
    RETURN_IF_ERROR(AllGather(in + to * bytes_per_rank, gathered.data(), bytes_per_rank, opts));
    std::memcpy(out + from * bytes_per_rank, gathered.data() + from * bytes_per_rank, bytes_per_rank);
  }
  return OkStatus();
}

}  // namespace shoal

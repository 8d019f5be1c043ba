// Out-of-line pieces of the Communicator interface: dtype sizes and names, used by
// every backend for byte counts and error messages.
#include "collectives/communicator.h"

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

}  // namespace shoal

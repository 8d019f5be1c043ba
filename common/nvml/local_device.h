// Which GPU a worker uses: an explicit index, else its local rank from the launcher
// (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID), else 0. Pure logic, testable on CPU.
#pragma once

#include "common/status.h"

namespace shoal {

// `explicit_device` >= 0 wins. A local rank past the device count is refused rather
// than wrapped: two ranks sharing one GPU under NCCL deadlock or fail obscurely.
StatusOr<int> ChooseLocalDevice(int explicit_device, int device_count);

}  // namespace shoal

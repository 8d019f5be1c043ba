// What the launcher told this process: mpirun (Open MPI) and srun (Slurm) export the
// process's rank, world size and local rank; a worker started by hand has none.
#pragma once

#include <string>

namespace shoal {

struct LauncherEnv {
  std::string launcher = "none";  // "mpirun" | "srun" | "none"
  int rank = -1;
  int size = -1;
  int local_rank = -1;
};

LauncherEnv DetectLauncher();

}  // namespace shoal

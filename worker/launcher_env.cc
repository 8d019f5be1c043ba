// Launcher detection from environment variables.
#include "worker/launcher_env.h"

#include <cstdlib>

namespace shoal {

namespace {
int EnvInt(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  return (end && *end == '\0' && x >= 0 && x < (1 << 24)) ? static_cast<int>(x) : -1;
}
}  // namespace

LauncherEnv DetectLauncher() {
  LauncherEnv env;
  if (EnvInt("OMPI_COMM_WORLD_SIZE") > 0) {
    env.launcher = "mpirun";
    env.rank = EnvInt("OMPI_COMM_WORLD_RANK");
    env.size = EnvInt("OMPI_COMM_WORLD_SIZE");
    env.local_rank = EnvInt("OMPI_COMM_WORLD_LOCAL_RANK");
  } else if (EnvInt("SLURM_NTASKS") > 0 && EnvInt("SLURM_PROCID") >= 0) {
    env.launcher = "srun";
    env.rank = EnvInt("SLURM_PROCID");
    env.size = EnvInt("SLURM_NTASKS");
    env.local_rank = EnvInt("SLURM_LOCALID");
  }
  return env;
}

}  // namespace shoal

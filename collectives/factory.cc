// MakeCommunicator: resolve the requested backend, check it is enabled in this
// process, build it. New backends add one entry to Backends().
#include "collectives/factory.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <functional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "collectives/gloo/gloo_communicator.h"
#include "collectives/mpi/mpi_communicator.h"
#include "shoal/config.h"
#if SHOAL_HAVE_NCCL
#include "collectives/nccl/nccl_communicator.h"
#endif

namespace shoal {
namespace {

bool EnvSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0';
}

struct Backend {
  const char* name;
  std::function<bool()> enabled;
  const char* why_disabled;
  std::function<StatusOr<std::unique_ptr<Communicator>>(const CommunicatorConfig&)> make;
};

StatusOr<std::unique_ptr<Communicator>> MakeMpi(const CommunicatorConfig& config) {
  ASSIGN_OR_RETURN(auto comm, MakeMpiCommunicator(config.link_emulation));
  if (config.size > 1 && config.size != comm->size()) {
    return InvalidArgument(fmt::format("mpi backend: job expects {} ranks but mpirun started {}",
                                       config.size, comm->size()));
  }
  return comm;
}

const std::vector<Backend>& Backends() {
  static const auto* backends = new std::vector<Backend>{
      {"mpi", UnderMpiLauncher, "the mpi backend needs the job started by mpirun/mpiexec/srun",
       MakeMpi},
      {"gloo", [] { return true; }, "",
       [](const CommunicatorConfig& c) {
         return MakeGlooCommunicator(c.rank, c.size, c.kv, c.prefix, c.timeout,
                                     c.interface_or_host, c.link_emulation);
       }},
#if SHOAL_HAVE_NCCL
      // Enabled where a CUDA device is visible; the device comes from the launcher's
      // local rank (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID) or 0.
      {"nccl", nccl::NcclUsable, "the nccl backend needs a CUDA GPU and this host shows none",
       [](const CommunicatorConfig& c) -> StatusOr<std::unique_ptr<Communicator>> {
         nccl::NcclOptions o;
         o.rank = c.rank;
         o.size = c.size;
         o.kv = c.kv;
         o.prefix = c.prefix;
         o.timeout = c.timeout;
         o.device = c.device;
         return nccl::MakeNcclCommunicator(o);
       }},
#else
      {"nccl", [] { return true; }, "",
       [](const CommunicatorConfig&) -> StatusOr<std::unique_ptr<Communicator>> {
         return Unimplemented("nccl backend not built");
       }},
#endif
  };
  return *backends;
}

}  // namespace

bool UnderMpiLauncher() {
  if (EnvSet("OMPI_COMM_WORLD_SIZE") || EnvSet("PMI_RANK") || EnvSet("PMIX_RANK")) return true;
  const char* mpi_type = std::getenv("SLURM_MPI_TYPE");
  return EnvSet("SLURM_PROCID") && mpi_type != nullptr && mpi_type[0] != '\0' &&
         std::string(mpi_type) != "none";
}

std::vector<std::string> KnownBackends() {
  std::vector<std::string> names;
  for (const auto& b : Backends()) names.emplace_back(b.name);
  return names;
}

std::string ResolveBackend(const std::string& requested) {
  std::string name = requested;
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (name == "auto" || name.empty()) return UnderMpiLauncher() ? "mpi" : "gloo";
  return name;
}

StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(const CommunicatorConfig& config) {
  const std::string name = ResolveBackend(config.backend);
  for (const auto& backend : Backends()) {
    if (name != backend.name) continue;
    if (!backend.enabled()) {
      return FailedPrecondition(fmt::format("backend '{}' is not enabled: {}", name,
                                            backend.why_disabled));
    }
    if (name != "mpi" && (config.size < 1 || config.rank < 0 || config.rank >= config.size)) {
      return InvalidArgument(fmt::format("communicator config: rank {} outside [0, {})",
                                         config.rank, config.size));
    }
    return backend.make(config);
  }
  return InvalidArgument(fmt::format("unknown collectives backend '{}' (known: auto, {})",
                                     config.backend, fmt::join(KnownBackends(), ", ")));
}

}  // namespace shoal

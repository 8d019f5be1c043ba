// MakeCommunicator: resolve the requested backend, check it is enabled in this
// process, build it. New backends add one entry to Backends().
#include "collectives/factory.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "collectives/gloo/gloo_communicator.h"
#include "collectives/hierarchical/hierarchical_communicator.h"
#include "collectives/mpi/mpi_communicator.h"
#include "collectives/shm/shm_communicator.h"
#include "common/log.h"
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

std::string Lower(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name;
}

std::chrono::milliseconds LeftOf(std::chrono::steady_clock::time_point deadline) {
  return std::max(std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()),
                  std::chrono::milliseconds(1));
}

// Every rank's host label, through the store: each rank sets its own under
// `prefix`/hosts/<rank> and reads the others', all within the config's timeout.
StatusOr<std::vector<std::string>> ExchangeHosts(const CommunicatorConfig& c) {
  const std::string label = c.host.empty() ? LocalHostLabel() : c.host;
  if (c.size == 1) return std::vector<std::string>{label};
  if (c.kv == nullptr) return InvalidArgument("host exchange: kv store is null");
  const auto deadline = std::chrono::steady_clock::now() + c.timeout;
  const std::string base = c.prefix + (c.prefix.empty() || c.prefix.back() == '/' ? "" : "/") + "hosts/";
  RETURN_IF_ERROR(c.kv->Set(base + std::to_string(c.rank), label).WithContext("host exchange"));
  std::vector<std::string> hosts(c.size);
  for (int q = 0; q < c.size; ++q) {
    if (q == c.rank) {
      hosts[q] = label;
      continue;
    }
    auto got = c.kv->Get(base + std::to_string(q), LeftOf(deadline));
    if (!got.ok()) return got.status().WithContext(fmt::format("host exchange: rank {}'s host", q));
    hosts[q] = *got;
  }
  return hosts;
}

StatusOr<std::unique_ptr<Communicator>> MakeHierarchical(const CommunicatorConfig& c) {
  const auto deadline = std::chrono::steady_clock::now() + c.timeout;
  ASSIGN_OR_RETURN(auto hosts, ExchangeHosts(c));
  return MakeHierarchicalCommunicator(c.rank, hosts, c.kv, c.prefix, LeftOf(deadline), c.interface_or_host,
                                      c.link_emulation);
}

bool EmulatingLinks(const CommunicatorConfig& c) {
  if (c.link_emulation) return c.link_emulation->enabled();
  auto env = LinkEmulationFromEnv();
  return env.ok() && env->enabled();
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
      {"shm", [] { return true; }, "",
       [](const CommunicatorConfig& c) {
         return MakeShmCommunicator(c.rank, c.size, c.kv, c.prefix, c.timeout);
       }},
      {"hierarchical", [] { return true; }, "", MakeHierarchical},
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

std::string LocalHostLabel() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) name[0] = '\0';
  std::string boot;
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::getline(in, boot);
  // Which /dev/shm a process sees: its file system's device, not the mount namespace
  // (`ip netns exec` gives every process a mount namespace of its own, all on the
  // machine's one /dev/shm; a container with a private /dev/shm has another device).
  // The network namespace is there so that namespaces standing in for hosts on one
  // machine count as hosts.
  struct stat shm {};
  const std::string shm_dev =
      ::stat("/dev/shm", &shm) == 0 ? fmt::format("{}:{}", major(shm.st_dev), minor(shm.st_dev)) : "?";
  char link[64] = {};
  const ssize_t n = ::readlink("/proc/self/ns/net", link, sizeof(link) - 1);
  const std::string net = n > 0 ? std::string(link, static_cast<size_t>(n)) : std::string("?");
  return fmt::format("{}/{}/shm-{}/{}", name, boot, shm_dev, net);
}

std::string PickByHosts(const std::vector<std::string>& hosts) {
  const std::set<std::string> distinct(hosts.begin(), hosts.end());
  if (distinct.size() <= 1) return "shm";
  if (distinct.size() == hosts.size()) return "gloo";
  return "hierarchical";
}

std::string ResolveBackend(const std::string& requested) {
  const std::string name = Lower(requested);
  if (name == "auto" || name.empty()) return UnderMpiLauncher() ? "mpi" : "gloo";
  return name;
}

StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(const CommunicatorConfig& config) {
  const std::string requested = Lower(config.backend);
  if ((requested == "auto" || requested.empty()) && !UnderMpiLauncher()) {
    if (config.size < 1 || config.rank < 0 || config.rank >= config.size) {
      return InvalidArgument(fmt::format("communicator config: rank {} outside [0, {})",
                                         config.rank, config.size));
    }
    CommunicatorConfig picked = config;
    if (EmulatingLinks(config)) {
      // Emulated links are for measuring the network path on one machine: keep it.
      picked.backend = "gloo";
    } else {
      const auto deadline = std::chrono::steady_clock::now() + config.timeout;
      ASSIGN_OR_RETURN(auto hosts, ExchangeHosts(config));
      picked.backend = PickByHosts(hosts);
      SHOAL_LOG_INFO("collectives backend auto: {} rank(s) on {} host(s) -> {}", config.size,
                     std::set<std::string>(hosts.begin(), hosts.end()).size(), picked.backend);
      picked.timeout = LeftOf(deadline);
      if (picked.backend == "hierarchical") {
        return MakeHierarchicalCommunicator(config.rank, hosts, config.kv, config.prefix, picked.timeout,
                                            config.interface_or_host, config.link_emulation);
      }
    }
    return MakeCommunicator(picked);
  }
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

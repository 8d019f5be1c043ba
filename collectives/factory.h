// Picks and builds the data-plane backend at run time: an ordered list of backends,
// each with an Enabled() check (Horovod's operation-manager pattern), no #if chains.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "collectives/bandwidth.h"
#include "collectives/communicator.h"

namespace shoal {

struct CommunicatorConfig {
  // "auto", "gloo", "mpi", "nccl", "shm" (every rank on one host) or "hierarchical"
  // (shm within each host, gloo among one leader per host).
  std::string backend = "auto";
  int rank = 0;
  int size = 1;
  KvStore* kv = nullptr;  // rendezvous store (gloo, later nccl); not owned
  std::string prefix;     // rendezvous scope, unique per job generation
  std::chrono::milliseconds timeout{60'000};
  // Gloo only: interface name ("eth0") or host/address to bind to.
  std::string interface_or_host = "127.0.0.1";
  int device = -1;  // nccl: -1 = the launcher's local rank
  // gloo and mpi: link emulation (bandwidth.h); unset = read from the environment.
  std::optional<LinkEmulation> link_emulation = std::nullopt;
  // auto and hierarchical: this rank's host. Ranks with the same label must share
  // /dev/shm; the labels are exchanged through `kv` under `prefix`. Empty:
  // LocalHostLabel().
  std::string host{};
};

// "auto" becomes "mpi" when this process was started by an MPI launcher, else
// "gloo"; any other name is returned as given (lower-cased). It answers what kind of
// job this is (fixed MPI membership or an elastic one): MakeCommunicator, given
// "auto" itself outside an MPI launcher, goes on to pick by host (PickByHosts).
std::string ResolveBackend(const std::string& requested);

// The elastic backend for ranks on `hosts` (hosts[r] = rank r's label): "shm" when
// all share one host, "gloo" when none shares a host with another, else "hierarchical".
std::string PickByHosts(const std::vector<std::string>& hosts);

// This process's host label: hostname, boot id, the device of /dev/shm and the network
// namespace. Equal labels share /dev/shm; network namespaces on one machine (standing in
// for hosts in tests) count as different hosts.
std::string LocalHostLabel();

// True when an MPI launcher started this process: OMPI_COMM_WORLD_SIZE (Open MPI),
// PMI_RANK / PMIX_RANK (MPICH/Hydra, PMIx), or srun with an MPI plugin
// (SLURM_PROCID and SLURM_MPI_TYPE other than "none").
bool UnderMpiLauncher();

// Names of the backends this build knows, in preference order.
std::vector<std::string> KnownBackends();

// Builds the resolved backend. "auto" outside an MPI launcher exchanges host labels
// through the store and builds what PickByHosts names (logged; the communicator's
// backend() says which). kFailedPrecondition if it is known but not enabled
// here (mpi outside mpirun), kUnimplemented for nccl in builds without NCCL, kFailedPrecondition where no GPU is visible, kInvalidArgument for an
// unknown name or a bad config. For mpi, rank and size come from MPI; a config
// whose size disagrees is rejected.
StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(const CommunicatorConfig& config);

}  // namespace shoal

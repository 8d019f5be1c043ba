// Communicator for a job spanning hosts with several ranks on some: shared memory
// within each host, Gloo TCP among one leader per host. An allreduce sums within the
// host, across the leaders, then broadcasts within the host, so each host's link
// carries the buffer once per step instead of once per rank.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "collectives/bandwidth.h"
#include "collectives/communicator.h"

namespace shoal {

// Where each rank runs: hosts[r] is rank r's host label (ranks with equal labels
// share /dev/shm). Hosts are numbered by first appearance; a host's leader is its
// lowest rank; local ranks are numbered in rank order.
struct HostLayout {
  std::vector<int> host_of;                // rank -> host index
  std::vector<std::vector<int>> ranks_on;  // host index -> ranks, ascending
  int hosts() const { return static_cast<int>(ranks_on.size()); }
};
HostLayout LayoutOf(const std::vector<std::string>& hosts);

// Builds the host's shm communicator under `prefix` + "/host-<h>/" and, on leaders,
// the leaders' Gloo communicator under `prefix` + "/leaders/" (bound to
// `interface_or_host`); everything within `timeout`.
StatusOr<std::unique_ptr<Communicator>> MakeHierarchicalCommunicator(
    int rank, const std::vector<std::string>& hosts, KvStore* kv, const std::string& prefix,
    std::chrono::milliseconds timeout, const std::string& interface_or_host = "127.0.0.1",
    const std::optional<LinkEmulation>& emulation = std::nullopt);

// Failure model: any failed phase aborts both parts (so the host's other ranks and
// the other leaders fail promptly) and the communicator is unusable; build a new one.
// Calls are matched by issue order (concurrent_tags() is false). Byte counters are
// the sum of both parts'.
class HierarchicalCommunicator : public Communicator {
 public:
  HierarchicalCommunicator(int rank, int size, int host, int hosts,
                           std::unique_ptr<Communicator> local,
                           std::unique_ptr<Communicator> leaders);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "hierarchical"; }

  // Host sum over shared memory; leaders sum those over Gloo (the average divided
  // there once, in f32, for all ranks); then broadcast within the host. 16-bit data
  // is rounded after each of the two sums: within the (n-1)-roundings bound of the
  // ring for any n >= 3, bit-identical on every rank.
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op,
                   const CollectiveOptions& opts) override;
  // Host gather, leaders gather the hosts' blocks (padded to the largest host),
  // reorder into rank order, broadcast within the host.
  Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                   const CollectiveOptions& opts) override;
  // Within the root's host, then across leaders, then within every other host.
  Status Broadcast(void* data, size_t bytes, int root, const CollectiveOptions& opts) override;
  Status Barrier(const CollectiveOptions& opts) override;
  void Abort() override;

  bool leader() const { return leaders_ != nullptr; }

 private:
  // Runs one call's phases with the deadline shared among them; on failure aborts
  // both parts. Refreshes the byte counters either way.
  template <typename Body>
  Status Run(const char* name, const CollectiveOptions& opts, Body&& body);
  void UpdateCounters();

  const int rank_;
  const int size_;
  const int host_;
  const int hosts_;
  const std::unique_ptr<Communicator> local_;    // this host's ranks (shm)
  const std::unique_ptr<Communicator> leaders_;  // one rank per host (gloo); null off leaders
  std::vector<std::vector<int>> ranks_on_;       // per host: its ranks (set by the factory)
  friend StatusOr<std::unique_ptr<Communicator>> MakeHierarchicalCommunicator(
      int rank, const std::vector<std::string>& hosts, KvStore* kv, const std::string& prefix,
      std::chrono::milliseconds timeout, const std::string& interface_or_host,
      const std::optional<LinkEmulation>& emulation);
};

}  // namespace shoal

// HierarchicalCommunicator: each collective as phases on the host's shm communicator
// and the leaders' Gloo communicator, sharing one deadline; a failed phase aborts both.
#include "collectives/hierarchical/hierarchical_communicator.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include <fmt/format.h>

#include "collectives/dtype.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/shm/shm_communicator.h"

namespace shoal {
namespace {

using Clock = std::chrono::steady_clock;

std::string Join(const std::string& prefix, const std::string& part) {
  return prefix + (prefix.empty() || prefix.back() == '/' ? "" : "/") + part + "/";
}

// data /= n elementwise, in f32, rounded once to the dtype.
void DivideInPlace(void* data, size_t count, DType dtype, int n) {
  const float divisor = static_cast<float>(n);
  if (dtype == DType::kF32) {
    auto* f = static_cast<float*>(data);
    for (size_t i = 0; i < count; ++i) f[i] /= divisor;
    return;
  }
  constexpr size_t kBlock = 1024;
  float tmp[kBlock];
  auto* p = static_cast<char*>(data);
  for (size_t i = 0; i < count; i += kBlock) {
    const size_t b = std::min(kBlock, count - i);
    ToF32(p + i * 2, dtype, tmp, b);
    for (size_t j = 0; j < b; ++j) tmp[j] /= divisor;
    FromF32(tmp, dtype, p + i * 2, b);
  }
}

std::chrono::milliseconds Left(Clock::time_point deadline) {
  return std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
}

}  // namespace

HostLayout LayoutOf(const std::vector<std::string>& hosts) {
  HostLayout layout;
  std::map<std::string, int> index;
  for (size_t r = 0; r < hosts.size(); ++r) {
    auto [it, added] = index.emplace(hosts[r], layout.hosts());
    if (added) layout.ranks_on.emplace_back();
    layout.host_of.push_back(it->second);
    layout.ranks_on[it->second].push_back(static_cast<int>(r));
  }
  return layout;
}

HierarchicalCommunicator::HierarchicalCommunicator(int rank, int size, int host, int hosts,
                                                   std::unique_ptr<Communicator> local,
                                                   std::unique_ptr<Communicator> leaders)
    : rank_(rank),
      size_(size),
      host_(host),
      hosts_(hosts),
      local_(std::move(local)),
      leaders_(std::move(leaders)) {}

void HierarchicalCommunicator::UpdateCounters() {
  counters_.sent = local_->bytes_sent() + (leaders_ ? leaders_->bytes_sent() : 0);
  counters_.received = local_->bytes_received() + (leaders_ ? leaders_->bytes_received() : 0);
}

void HierarchicalCommunicator::Abort() {
  local_->Abort();
  if (leaders_) leaders_->Abort();
}

template <typename Body>
Status HierarchicalCommunicator::Run(const char* name, const CollectiveOptions& opts, Body&& body) {
  if (opts.timeout.count() <= 0) {
    return InvalidArgument(fmt::format("{}(tag={}): timeout must be positive", name, opts.tag));
  }
  const auto deadline = Clock::now() + opts.timeout;
  // Each phase gets what is left of the call's deadline.
  auto phase = [&]() {
    CollectiveOptions o = opts;
    o.timeout = std::max(Left(deadline), std::chrono::milliseconds(1));
    return o;
  };
  Status s = body(phase);
  UpdateCounters();
  if (!s.ok()) {
    // The host's other ranks may be waiting on this one (or the other leaders on
    // this leader): abort both parts so they fail now, not at their deadlines.
    Abort();
    return s.WithContext(fmt::format("hierarchical {} on rank {} (host {} of {}{})", name, rank_, host_,
                                     hosts_, leaders_ ? ", leader" : ""));
  }
  return s;
}

Status HierarchicalCommunicator::AllReduce(void* data, size_t count, DType dtype, ReduceOp op,
                                           const CollectiveOptions& opts) {
  if (DTypeSize(dtype) == 0) return InvalidArgument("AllReduce: unknown dtype");
  if (count > 0 && data == nullptr) return InvalidArgument("AllReduce: data is null");
  return Run("AllReduce", opts, [&](auto phase) -> Status {
    // Through the parts even when there is nothing to move, so that an aborted or
    // broken communicator reports it.
    if (count == 0 || size_ == 1) return local_->AllReduce(data, count, dtype, op, phase());
    RETURN_IF_ERROR(local_->AllReduce(data, count, dtype, ReduceOp::kSum, phase()));
    if (leaders_) {
      RETURN_IF_ERROR(leaders_->AllReduce(data, count, dtype, ReduceOp::kSum, phase()));
    }
    if (local_->rank() == 0 && op == ReduceOp::kAverage) DivideInPlace(data, count, dtype, size_);
    return local_->Broadcast(data, count * DTypeSize(dtype), 0, phase());
  });
}

Status HierarchicalCommunicator::AllGather(const void* send, void* recv, size_t bytes_per_rank,
                                           const CollectiveOptions& opts) {
  if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
    return InvalidArgument("AllGather: null buffer");
  }
  return Run("AllGather", opts, [&](auto phase) -> Status {
    const size_t b = bytes_per_rank;
    const int local_n = local_->size();
    std::vector<char> host_blocks(static_cast<size_t>(local_n) * b);
    RETURN_IF_ERROR(local_->AllGather(send, host_blocks.data(), b, phase()));
    if (b == 0) return OkStatus();
    auto* out = static_cast<char*>(recv);
    if (local_->rank() == 0) {
      size_t widest = 0;
      for (const auto& r : ranks_on_) widest = std::max(widest, r.size());
      const size_t block = widest * b;  // every host's block padded to the largest host
      std::vector<char> all(static_cast<size_t>(hosts_) * block);
      std::memcpy(all.data() + host_ * block, host_blocks.data(), host_blocks.size());
      if (leaders_) {
        RETURN_IF_ERROR(leaders_->AllGather(all.data() + host_ * block, all.data(), block, phase()));
      }
      for (int h = 0; h < hosts_; ++h) {
        for (size_t i = 0; i < ranks_on_[h].size(); ++i) {
          std::memcpy(out + ranks_on_[h][i] * b, all.data() + h * block + i * b, b);
        }
      }
    }
    return local_->Broadcast(out, static_cast<size_t>(size_) * b, 0, phase());
  });
}

Status HierarchicalCommunicator::Broadcast(void* data, size_t bytes, int root,
                                           const CollectiveOptions& opts) {
  if (root < 0 || root >= size_) {
    return InvalidArgument(fmt::format("Broadcast: root {} outside [0, {})", root, size_));
  }
  if (bytes > 0 && data == nullptr) return InvalidArgument("Broadcast: data is null");
  return Run("Broadcast", opts, [&](auto phase) -> Status {
    int root_host = 0, root_local = 0;
    for (int h = 0; h < hosts_; ++h) {
      const auto& on = ranks_on_[h];
      const auto it = std::find(on.begin(), on.end(), root);
      if (it != on.end()) {
        root_host = h;
        root_local = static_cast<int>(it - on.begin());
      }
    }
    if (host_ == root_host) RETURN_IF_ERROR(local_->Broadcast(data, bytes, root_local, phase()));
    if (leaders_) RETURN_IF_ERROR(leaders_->Broadcast(data, bytes, root_host, phase()));
    if (host_ != root_host) RETURN_IF_ERROR(local_->Broadcast(data, bytes, 0, phase()));
    return OkStatus();
  });
}

Status HierarchicalCommunicator::Barrier(const CollectiveOptions& opts) {
  return Run("Barrier", opts, [&](auto phase) -> Status {
    RETURN_IF_ERROR(local_->Barrier(phase()));
    if (leaders_) RETURN_IF_ERROR(leaders_->Barrier(phase()));
    return local_->Barrier(phase());
  });
}

StatusOr<std::unique_ptr<Communicator>> MakeHierarchicalCommunicator(
    int rank, const std::vector<std::string>& hosts, KvStore* kv, const std::string& prefix,
    std::chrono::milliseconds timeout, const std::string& interface_or_host,
    const std::optional<LinkEmulation>& emulation) {
  const int size = static_cast<int>(hosts.size());
  if (size < 1 || rank < 0 || rank >= size) {
    return InvalidArgument(fmt::format("MakeHierarchicalCommunicator: rank {} outside [0, {})", rank, size));
  }
  if (kv == nullptr) return InvalidArgument("MakeHierarchicalCommunicator: kv store is null");
  if (timeout.count() <= 0) return InvalidArgument("MakeHierarchicalCommunicator: timeout must be positive");
  const HostLayout layout = LayoutOf(hosts);
  const int host = layout.host_of[rank];
  const auto& mine = layout.ranks_on[host];
  const int local_rank = static_cast<int>(std::find(mine.begin(), mine.end(), rank) - mine.begin());
  const auto deadline = Clock::now() + timeout;
  ASSIGN_OR_RETURN(auto local, MakeShmCommunicator(local_rank, static_cast<int>(mine.size()), kv,
                                                   Join(prefix, fmt::format("host-{}", host)), timeout));
  std::unique_ptr<Communicator> leaders;
  if (local_rank == 0 && layout.hosts() > 1) {
    const auto left = Left(deadline);
    if (left.count() <= 0) return DeadlineExceeded("MakeHierarchicalCommunicator: no time left for the leaders");
    // Gloo's adapter adds its own "/gloo/" after the prefix.
    std::string leader_prefix = Join(prefix, "leaders");
    leader_prefix.pop_back();
    ASSIGN_OR_RETURN(leaders, MakeGlooCommunicator(host, layout.hosts(), kv, leader_prefix, left,
                                                   interface_or_host, emulation));
  }
  auto comm = std::make_unique<HierarchicalCommunicator>(rank, size, host, layout.hosts(), std::move(local),
                                                         std::move(leaders));
  comm->ranks_on_ = layout.ranks_on;
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace shoal

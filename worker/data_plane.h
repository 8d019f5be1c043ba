// Confines the data plane (the gradient traffic between workers) to the interface the
// worker was told to use. Gloo's TCP device binds the listen address itself; NCCL and
// Open MPI pick their interfaces from the environment, so this sets NCCL_SOCKET_IFNAME
// and OMPI_MCA_btl_tcp_if_include to that interface, unless the user already set them.
// The data plane is not encrypted or authenticated (docs/ARCHITECTURE.md says what that
// means); keeping it on the cluster's private interface is what protects it.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace shoal {

// The interface that owns `host_or_iface` (an interface name, a numeric address, or a
// host name resolved to one); kNotFound when no local interface has it.
StatusOr<std::string> InterfaceOf(const std::string& host_or_iface);

// Sets the variables for `iface` where unset; returns "NAME=value" for each one it set.
std::vector<std::string> ConfineDataPlane(const std::string& iface);

}  // namespace shoal

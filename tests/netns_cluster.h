// A simulated cluster on one machine: `hosts` Linux network namespaces, each joined by a
// veth pair to a bridge that lives in a switch namespace of its own, with addresses
// 10.99.0.1, .2, ... inside the namespaces only (nothing is added to the machine's own
// namespace). A process started through Exec() runs on that host; a thread that calls
// Enter() talks from it. A partition moves hosts' switch ports to a second, isolated
// bridge (they still reach each other, not the rest) until Heal(); a host's port can
// also simply go down. The destructor deletes every namespace it made, and with them
// their links; Create() first removes what a crashed earlier run left behind.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal::testing {

class NetnsCluster {
 public:
  // kFailedPrecondition naming what failed (not root, no `ip`, no namespaces) when the
  // cluster cannot be made: callers skip with that reason.
  static StatusOr<std::unique_ptr<NetnsCluster>> Create(int hosts);
  ~NetnsCluster();
  NetnsCluster(const NetnsCluster&) = delete;
  NetnsCluster& operator=(const NetnsCluster&) = delete;

  int hosts() const { return static_cast<int>(names_.size()); }
  const std::string& name(int host) const { return names_.at(host); }
  std::string address(int host) const { return "10.99.0." + std::to_string(host + 1); }
  // argv run on `host` (`ip netns exec NAME argv...`; the pid stays the program's).
  std::vector<std::string> Exec(int host, const std::vector<std::string>& argv) const;
  // Moves the calling thread (and the processes it starts from then on) into `host`.
  Status Enter(int host) const;

  // Cuts `group` off from every other host: their ports move to an isolated bridge.
  Status Partition(const std::vector<int>& group);
  Status Heal();  // every port back on the main bridge, every link up
  Status SetLinkUp(int host, bool up);

 private:
  NetnsCluster() = default;
  Status Ip(const std::vector<std::string>& args) const;  // `ip args...`, its stderr in the error
  std::string tag_, switch_;
  std::vector<std::string> names_;
};

// Removes namespaces named shoal-<pid>-* whose pid no longer runs.
void RemoveStaleNamespaces();

}  // namespace shoal::testing

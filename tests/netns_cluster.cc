// The simulated cluster's plumbing: `ip netns`, veth pairs and two bridges (see the header).
#include "tests/netns_cluster.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "tests/process_util.h"

namespace shoal::testing {

namespace {

constexpr const char* kMainBridge = "br0";
constexpr const char* kIsolatedBridge = "br1";

std::string Port(int host) { return "p" + std::to_string(host); }

}  // namespace

void RemoveStaleNamespaces() {
  auto list = RunCommand({"ip", "netns", "list"}, 10);
  std::istringstream in(list.out);
  std::string line;
  while (std::getline(in, line)) {
    const std::string name = line.substr(0, line.find(' '));
    if (name.rfind("shoal-", 0) != 0) continue;
    const int pid = std::atoi(name.c_str() + 6);
    if (pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM)) continue;
    (void)RunCommand({"ip", "netns", "del", name}, 10);
  }
}

Status NetnsCluster::Ip(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = RunCommand(argv, 10);
  if (r.exit_code == 0) return OkStatus();
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  return FailedPrecondition("`" + cmd + "` failed: " + (r.err.empty() ? "exit " + std::to_string(r.exit_code) : r.err));
}

StatusOr<std::unique_ptr<NetnsCluster>> NetnsCluster::Create(int hosts) {
  if (::geteuid() != 0) return FailedPrecondition("network namespaces need root (euid " + std::to_string(::geteuid()) + ")");
  if (hosts < 1 || hosts > 200) return InvalidArgument("hosts must be in [1, 200]");
  RemoveStaleNamespaces();
  std::unique_ptr<NetnsCluster> c(new NetnsCluster());
  c->tag_ = "shoal-" + std::to_string(::getpid()) + "-";
  static int made = 0;  // several clusters in one process get distinct names
  c->tag_ += std::to_string(made++) + "-";
  c->switch_ = c->tag_ + "sw";
  RETURN_IF_ERROR(c->Ip({"netns", "add", c->switch_}));
  c->names_.clear();
  for (const char* br : {kMainBridge, kIsolatedBridge}) {
    RETURN_IF_ERROR(c->Ip({"-n", c->switch_, "link", "add", br, "type", "bridge"}));
    RETURN_IF_ERROR(c->Ip({"-n", c->switch_, "link", "set", br, "up"}));
  }
  for (int h = 0; h < hosts; ++h) {
    const std::string ns = c->tag_ + "h" + std::to_string(h);
    RETURN_IF_ERROR(c->Ip({"netns", "add", ns}));
    c->names_.push_back(ns);
    // The pair is made in the host and its far end moved to the switch.
    RETURN_IF_ERROR(c->Ip({"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", Port(h)}));
    RETURN_IF_ERROR(c->Ip({"-n", ns, "link", "set", Port(h), "netns", c->switch_}));
    RETURN_IF_ERROR(c->Ip({"-n", c->switch_, "link", "set", Port(h), "master", kMainBridge}));
    RETURN_IF_ERROR(c->Ip({"-n", c->switch_, "link", "set", Port(h), "up"}));
    RETURN_IF_ERROR(c->Ip({"-n", ns, "addr", "add", c->address(h) + "/24", "dev", "eth0"}));
    RETURN_IF_ERROR(c->Ip({"-n", ns, "link", "set", "eth0", "up"}));
    RETURN_IF_ERROR(c->Ip({"-n", ns, "link", "set", "lo", "up"}));
  }
  return c;
}

NetnsCluster::~NetnsCluster() {
  for (const std::string& ns : names_) (void)Ip({"netns", "del", ns});
  if (!switch_.empty()) (void)Ip({"netns", "del", switch_});
}

std::vector<std::string> NetnsCluster::Exec(int host, const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {"ip", "netns", "exec", name(host)};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

Status NetnsCluster::Enter(int host) const {
  const std::string path = "/run/netns/" + name(host);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FailedPrecondition("open " + path + ": " + std::strerror(errno));
  const int rc = ::setns(fd, CLONE_NEWNET);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return FailedPrecondition("setns into " + name(host) + ": " + std::strerror(err));
  return OkStatus();
}

Status NetnsCluster::Partition(const std::vector<int>& group) {
  for (int h : group) RETURN_IF_ERROR(Ip({"-n", switch_, "link", "set", Port(h), "master", kIsolatedBridge}));
  return OkStatus();
}

Status NetnsCluster::Heal() {
  for (int h = 0; h < hosts(); ++h) {
    RETURN_IF_ERROR(Ip({"-n", switch_, "link", "set", Port(h), "master", kMainBridge}));
    RETURN_IF_ERROR(Ip({"-n", switch_, "link", "set", Port(h), "up"}));
  }
  return OkStatus();
}

Status NetnsCluster::SetLinkUp(int host, bool up) {
  return Ip({"-n", switch_, "link", "set", Port(host), up ? "up" : "down"});
}

}  // namespace shoal::testing

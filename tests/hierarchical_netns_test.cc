// Issue 18's two-host job: two network namespaces, two workers on each. `auto` sees two
// hosts (a namespace is a host to it) and reduces hierarchically: shared memory within
// each host, Gloo between the two leaders over the veth link. The same job with the
// flat Gloo ring must end with the same parameters, within float tolerance (the sums
// are taken in another order). Skips where namespaces cannot be made.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <thread>

#include "checkpoint/reader.h"
#include "tests/cluster_util.h"
#include "tests/netns_cluster.h"

namespace shoal::testing {
namespace {

// Runs the test body in host 0's namespace and comes back after, so that the other
// tests of this binary keep the machine's namespace.
class NamespaceGuard {
 public:
  NamespaceGuard() : fd_(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) {}
  ~NamespaceGuard() {
    if (fd_ >= 0) {
      (void)::setns(fd_, CLONE_NEWNET);
      ::close(fd_);
    }
  }

 private:
  int fd_;
};

// Trains 40 steps of the example job with 2 workers on each of hosts 1 and 2 and
// returns the job's status; its final checkpoint goes to `ck`.
nlohmann::json TrainOnTwoHosts(NetnsCluster& net, const std::string& dir, const std::string& backend,
                               const std::string& ck) {
  CoordinatorProcess coord(dir + "/" + backend, net.address(0));
  std::vector<std::string> submit = {kBin + "/shoalctl", "submit", kSpec, "--coordinator", coord.endpoint(), "--job-id",
                                     "j"};
  for (const std::string& s : {std::string("workers.initial=4"), "collectives.backend=" + backend,
                               std::string("training.max_steps=40"), std::string("training.evaluate=false"),
                               "checkpoint.dir=" + ck, std::string("checkpoint.allow_unsigned=true")}) {
    submit.push_back("--set");
    submit.push_back(s);
  }
  auto r = RunCommand(submit, 20);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::unique_ptr<BackgroundProcess>> workers;
  for (int host : {1, 1, 2, 2})
    workers.push_back(std::make_unique<BackgroundProcess>(
        net.Exec(host, {"env", "SHOAL_LISTEN_HOST=" + net.address(host), kBin + "/shoal-worker", "--coordinator",
                        coord.endpoint(), "--job", "j"}),
        dir + "/" + backend + "-w" + std::to_string(workers.size()) + ".log"));
  for (auto& w : workers) EXPECT_EQ(w->Wait(240), 0) << ReadText(dir + "/" + backend + "-w0.log");
  return StatusJson(coord.endpoint(), "j");
}

std::vector<float> Params(const std::string& ck) {
  TrustStore none;
  auto loaded = LoadCheckpoint(ck + "/j", none, /*allow_unsigned=*/true);
  EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
  std::vector<float> out;
  if (!loaded.ok()) return out;
  for (const NamedTensor& t : loaded->snapshot.tensors) {
    if (t.name.rfind("optim.", 0) == 0) continue;
    const size_t n = t.bytes.size() / sizeof(float);
    const size_t at = out.size();
    out.resize(at + n);
    std::memcpy(out.data() + at, t.bytes.data(), n * sizeof(float));
  }
  return out;
}

TEST(TwoHosts, AutoReducesHierarchicallyToTheFlatRingsParameters) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  auto made = NetnsCluster::Create(3);
  if (!made.ok()) GTEST_SKIP() << "no network namespaces here: " << made.status().ToString();
  NetnsCluster& net = **made;
  NamespaceGuard back;
  ASSERT_TRUE(net.Enter(0).ok());
  const std::string dir = TempDir("two-hosts");
  auto hier = TrainOnTwoHosts(net, dir, "auto", dir + "/ck-auto");
  auto flat = TrainOnTwoHosts(net, dir, "gloo", dir + "/ck-gloo");
  ASSERT_EQ(hier.value("state", ""), "completed") << hier.dump(2);
  ASSERT_EQ(flat.value("state", ""), "completed") << flat.dump(2);
  EXPECT_EQ(hier["result"]["backend"], "hierarchical") << hier.dump(2);
  EXPECT_EQ(flat["result"]["backend"], "gloo");
  EXPECT_EQ(hier["result"]["steps"], 40);
  const std::vector<float> a = Params(dir + "/ck-auto"), b = Params(dir + "/ck-gloo");
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GT(a.size(), 200000u);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
  }
  std::cout << "max |hierarchical - flat| = " << worst << " (max |param| " << scale << ")\n";
  // Float sums in another order differ by ulps per step; 40 SGD steps keep them tiny.
  EXPECT_LT(worst, 1e-4 * std::max(1.0, scale));
}

}  // namespace
}  // namespace shoal::testing

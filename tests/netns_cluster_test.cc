// The simulated cluster itself: hosts reach each other over the bridge, a partition
// cuts exactly the hosts it names off from the rest (they still reach each other), a
// link down cuts one host, and healing restores everything; the namespaces are gone
// afterwards. Skips, saying why, where namespaces cannot be made.
#include "tests/netns_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

#include "tests/process_util.h"

namespace shoal::testing {
namespace {

constexpr int kPort = 17431;

// A listener on `host`'s address, from a thread inside that host.
class Listener {
 public:
  Listener(const NetnsCluster& c, int host) {
    std::thread t([&] {
      if (!c.Enter(host).ok()) return;
      fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(kPort);
      ::inet_pton(AF_INET, c.address(host).c_str(), &a.sin_addr);
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd_, 16) != 0) {
        ::close(fd_);
        fd_ = -1;
      }
    });
    t.join();  // the socket stays in the namespace it was made in
  }
  ~Listener() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// True when a TCP connection from `from` to `to` opens within 300 ms.
bool Reaches(const NetnsCluster& c, int from, int to) {
  bool ok = false;
  std::thread t([&] {
    if (!c.Enter(from).ok()) return;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(kPort);
    ::inet_pton(AF_INET, c.address(to).c_str(), &a.sin_addr);
    ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 300) == 1) {
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      ok = err == 0;
    }
    ::close(fd);
  });
  t.join();
  return ok;
}

TEST(NetnsClusterTest, PartitionsCutExactlyTheNamedHostsAndHealRestoresThem) {
  auto made = NetnsCluster::Create(4);
  if (!made.ok()) GTEST_SKIP() << "no network namespaces here: " << made.status().ToString();
  NetnsCluster& c = **made;
  std::vector<std::unique_ptr<Listener>> listeners;
  for (int h = 0; h < 4; ++h) {
    listeners.push_back(std::make_unique<Listener>(c, h));
    ASSERT_TRUE(listeners.back()->ok()) << "host " << h;
  }
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b) EXPECT_TRUE(Reaches(c, a, b)) << a << " -> " << b;

  ASSERT_TRUE(c.Partition({1, 2}).ok());
  EXPECT_FALSE(Reaches(c, 0, 1));
  EXPECT_FALSE(Reaches(c, 2, 3));
  EXPECT_TRUE(Reaches(c, 1, 2)) << "the cut-off side still reaches itself";
  EXPECT_TRUE(Reaches(c, 0, 3)) << "the rest still reaches itself";
  ASSERT_TRUE(c.Heal().ok());
  EXPECT_TRUE(Reaches(c, 0, 1));
  EXPECT_TRUE(Reaches(c, 2, 3));

  ASSERT_TRUE(c.SetLinkUp(3, false).ok());
  EXPECT_FALSE(Reaches(c, 0, 3));
  EXPECT_TRUE(Reaches(c, 0, 2));
  ASSERT_TRUE(c.Heal().ok());
  EXPECT_TRUE(Reaches(c, 0, 3));
}

TEST(NetnsClusterTest, EverythingItMadeIsGoneAfterwards) {
  std::string first;
  {
    auto made = NetnsCluster::Create(2);
    if (!made.ok()) GTEST_SKIP() << "no network namespaces here: " << made.status().ToString();
    first = (*made)->name(0);
    EXPECT_NE(RunCommand({"ip", "netns", "list"}).out.find(first), std::string::npos);
    // A program started on a host sees only that host's address.
    auto r = RunCommand((*made)->Exec(1, {"ip", "-4", "-o", "addr", "show", "dev", "eth0"}));
    EXPECT_NE(r.out.find("10.99.0.2/24"), std::string::npos) << r.out << r.err;
  }
  EXPECT_EQ(RunCommand({"ip", "netns", "list"}).out.find(first), std::string::npos);
}

}  // namespace
}  // namespace shoal::testing

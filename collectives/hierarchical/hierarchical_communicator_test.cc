// The hierarchical backend with ranks as threads and hosts simulated by labels (the
// ranks of one label share a segment, the leaders talk over loopback TCP): results
// against the reference and against the flat Gloo ring on the same inputs, the other
// collectives, the factory's choice for `auto`, and a leader's failure reaching its
// host promptly.
#include "collectives/hierarchical/hierarchical_communicator.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <future>
#include <set>

#include "collectives/factory.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"
#include "collectives/shm/process_test_util.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::Decode;
using testing::RunRanks;
using testing::UniquePrefix;

using Hosts = std::vector<std::string>;

std::vector<std::unique_ptr<Communicator>> Build(const Hosts& hosts, MemoryKvStore* kv,
                                                 const std::string& backend = "hierarchical") {
  const int n = static_cast<int>(hosts.size());
  const std::string prefix = UniquePrefix("hier");
  std::vector<std::unique_ptr<Communicator>> comms(n);
  RunRanks(n, [&](int r) {
    CommunicatorConfig cc;
    cc.backend = backend;
    cc.rank = r;
    cc.size = n;
    cc.kv = kv;
    cc.prefix = prefix;
    cc.timeout = 20s;
    cc.host = hosts[r];
    cc.link_emulation = LinkEmulation{};
    auto comm = MakeCommunicator(cc);
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    comms[r] = std::move(comm).value();
  });
  return comms;
}

// Each rank's buffer after one AllReduce of MakeInput on `comms`.
std::vector<std::vector<char>> AllReduceOn(std::vector<std::unique_ptr<Communicator>>& comms, size_t count,
                                           DType dtype, ReduceOp op, bool integer_valued) {
  const int n = static_cast<int>(comms.size());
  std::vector<std::vector<char>> out(n);
  RunRanks(n, [&](int r) {
    out[r] = testing::MakeInput(dtype, r, count, integer_valued);
    const Status s = comms[r]->AllReduce(out[r].data(), count, dtype, op, {});
    EXPECT_TRUE(s.ok()) << "rank " << r << ": " << s.ToString();
  });
  return out;
}

// Host layouts: two hosts of two (the case), three uneven hosts with ranks
// interleaved, one host, and every rank alone.
const std::vector<Hosts>& Layouts() {
  static const auto* layouts = new std::vector<Hosts>{
      {"a", "a", "b", "b"}, {"a", "b", "a", "c", "c", "c"}, {"a", "a", "a"}, {"a", "b", "c"}};
  return *layouts;
}

class HierarchicalTest : public ::testing::TestWithParam<int> {};

TEST_P(HierarchicalTest, AllReduceMatchesReferenceAndFlatGloo) {
  const Hosts& hosts = Layouts()[GetParam()];
  const int n = static_cast<int>(hosts.size());
  const int host_count = static_cast<int>(std::set<std::string>(hosts.begin(), hosts.end()).size());
  MemoryKvStore kv;
  auto hier = Build(hosts, &kv);
  auto flat = Build(hosts, &kv, "gloo");
  for (const auto& c : hier) ASSERT_TRUE(c);
  for (const auto& c : flat) ASSERT_TRUE(c);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
      for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{65537}}) {
        for (bool integer_valued : {true, false}) {
          SCOPED_TRACE(fmt::format("{} {} count {} {}", DTypeName(dtype), op == ReduceOp::kSum ? "sum" : "avg",
                                   count, integer_valued ? "integer" : "fractional"));
          const auto got = AllReduceOn(hier, count, dtype, op, integer_valued);
          const auto ring = AllReduceOn(flat, count, dtype, op, integer_valued);
          for (int r = 1; r < n; ++r) ASSERT_TRUE(got[r] == got[0]) << "rank " << r << " differs from rank 0";
          const auto ref = testing::ReferenceReduce(dtype, n, count, op, integer_valued);
          const auto h = Decode(got[0], dtype), g = Decode(ring[0], dtype);
          // Roundings of a 16-bit value: the host sum, the leaders' ring (hosts - 1),
          // the average's division: hosts + 1 in all, against the ring's n - 1.
          const double u = dtype == DType::kBF16 ? std::ldexp(1.0, -8) : dtype == DType::kF16 ? std::ldexp(1.0, -11) : 0;
          int bad = 0;
          for (size_t i = 0; i < count && bad < 5; ++i) {
            const double tol = dtype == DType::kF32 ? 1e-5 * ref.magnitude[i]
                                                    : (host_count + 1) * u * ref.magnitude[i] + n * std::ldexp(1.0, -24) * ref.magnitude[i];
            if (integer_valued) {
              // Small integers are exact in every dtype; an average divides once.
              const float want = testing::ExpectedInteger(dtype, ref.sum[i], n, op);
              if (h[i] != want) ++bad;
              EXPECT_EQ(h[i], want) << "element " << i;
            } else {
              if (std::fabs(h[i] - ref.value[i]) > tol) ++bad;
              EXPECT_NEAR(h[i], ref.value[i], tol) << "element " << i;
              EXPECT_NEAR(h[i], g[i], tol + testing::Tolerance(dtype, n, ref.magnitude[i])) << "element " << i;
            }
          }
        }
      }
    }
  }
}

TEST_P(HierarchicalTest, AllGatherBroadcastBarrierAllToAll) {
  const Hosts& hosts = Layouts()[GetParam()];
  const int n = static_cast<int>(hosts.size());
  MemoryKvStore kv;
  auto comms = Build(hosts, &kv);
  for (const auto& c : comms) ASSERT_TRUE(c);
  RunRanks(n, [&](int r) {
    Communicator& c = *comms[r];
    for (size_t bytes : {size_t{0}, size_t{1}, size_t{1001}}) {
      std::vector<char> mine(bytes), all(n * bytes, 0);
      for (size_t i = 0; i < bytes; ++i) mine[i] = static_cast<char>(r * 31 + i);
      ASSERT_TRUE(c.AllGather(mine.data(), all.data(), bytes, {}).ok());
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(all[p * bytes + i], static_cast<char>(p * 31 + i));
      }
      for (int root = 0; root < n; ++root) {
        std::vector<char> data(bytes, 0);
        if (r == root) {
          for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<char>(i * 7 + root);
        }
        ASSERT_TRUE(c.Broadcast(data.data(), bytes, root, {}).ok());
        for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(data[i], static_cast<char>(i * 7 + root)) << "root " << root;
      }
      std::vector<char> send(n * bytes), got(n * bytes, 0);
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) send[p * bytes + i] = static_cast<char>(r * 37 + p * 11 + i);
      }
      ASSERT_TRUE(c.AllToAll(send.data(), got.data(), bytes, {}).ok());
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(got[p * bytes + i], static_cast<char>(p * 37 + r * 11 + i));
      }
      ASSERT_TRUE(c.Barrier({}).ok());
    }
    EXPECT_GT(c.bytes_sent(), 0);
  });
}

INSTANTIATE_TEST_SUITE_P(Layouts, HierarchicalTest, ::testing::Values(0, 1, 2, 3),
                         [](const ::testing::TestParamInfo<int>& info) {
                           std::string name;
                           for (const auto& h : Layouts()[info.param]) name += h;
                           return name;
                         });

TEST(HierarchicalFactoryTest, AutoPicksByHost) {
  EXPECT_EQ(PickByHosts({"a"}), "shm");
  EXPECT_EQ(PickByHosts({"a", "a", "a"}), "shm");
  EXPECT_EQ(PickByHosts({"a", "b"}), "gloo");
  EXPECT_EQ(PickByHosts({"a", "b", "a"}), "hierarchical");
  EXPECT_FALSE(LocalHostLabel().empty());
  MemoryKvStore kv;
  for (const auto& [hosts, want] : std::vector<std::pair<Hosts, std::string>>{
           {{"x", "x", "x"}, "shm"}, {{"x", "y"}, "gloo"}, {{"x", "y", "y", "x"}, "hierarchical"}}) {
    auto comms = Build(hosts, &kv, "auto");
    for (const auto& c : comms) {
      ASSERT_TRUE(c);
      EXPECT_EQ(c->backend(), want);
    }
    RunRanks(static_cast<int>(hosts.size()), [&](int r) { EXPECT_TRUE(comms[r]->Barrier({}).ok()); });
    // Labels left empty: every rank here is on this machine.
    if (want == "shm") {
      auto local = Build({"", "", ""}, &kv, "auto");
      for (const auto& c : local) ASSERT_TRUE(c && c->backend() == "shm");
    }
  }
}

// A leader's failure (here: aborted) reaches its host's other ranks through the shm
// part and the other leaders through Gloo, promptly rather than at their deadlines.
TEST(HierarchicalFailureTest, AbortedLeaderFailsEveryoneSoon) {
  MemoryKvStore kv;
  auto comms = Build({"a", "a", "b", "b"}, &kv);
  for (const auto& c : comms) ASSERT_TRUE(c);
  // Host b's leader aborts and is destroyed, as a worker does when it leaves a
  // generation (Gloo peers see connections close; an abort alone is local in Gloo).
  comms[2]->Abort();
  comms[2].reset();
  std::vector<Status> got(4);
  const auto start = Clock::now();
  RunRanks(4, [&](int r) {
    if (r == 2) return;
    std::vector<float> v(1000, 1.0f);
    CollectiveOptions opts;
    opts.timeout = 20s;
    got[r] = comms[r]->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
  });
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 5.0);
  for (int r : {0, 1, 3}) EXPECT_FALSE(got[r].ok()) << "rank " << r;
  EXPECT_NE(got[3].message().find("rank 0 failed or was aborted"), std::string::npos) << got[3].ToString();
}

// ---- ranks as processes ------------------------------------------------------

// The child's side (only when re-executed with SHOAL_HIER_TEST_DIR set): build the
// communicator `auto` picks for its host label and a flat Gloo one, allreduce the same
// fractional gradient-sized input (f32 average) on both, write both results.
TEST(HierarchicalProcessChild, Rank) {
  const std::string dir = testing::Env("SHOAL_HIER_TEST_DIR");
  if (dir.empty()) GTEST_SKIP() << "child mode only";
  const int rank = std::atoi(testing::Env("SHOAL_HIER_TEST_RANK"));
  const int size = std::atoi(testing::Env("SHOAL_HIER_TEST_SIZE"));
  testing::DirKvStore kv(dir);
  CommunicatorConfig cc;
  cc.backend = "auto";
  cc.rank = rank;
  cc.size = size;
  cc.kv = &kv;
  cc.prefix = "hier/";
  cc.timeout = 30s;
  cc.host = testing::Env("SHOAL_HIER_TEST_HOST");
  cc.link_emulation = LinkEmulation{};
  auto hier = MakeCommunicator(cc);
  ASSERT_TRUE(hier.ok()) << hier.status().ToString();
  cc.backend = "gloo";
  cc.prefix = "flat/";
  auto flat = MakeCommunicator(cc);
  ASSERT_TRUE(flat.ok()) << flat.status().ToString();
  constexpr size_t kCount = 235146;
  auto a = testing::MakeInput(DType::kF32, rank, kCount, false), b = a;
  ASSERT_TRUE((*hier)->AllReduce(a.data(), kCount, DType::kF32, ReduceOp::kAverage, {}).ok());
  ASSERT_TRUE((*flat)->AllReduce(b.data(), kCount, DType::kF32, ReduceOp::kAverage, {}).ok());
  std::ofstream(dir + "/backend." + std::to_string(rank)) << (*hier)->backend();
  std::ofstream(dir + "/hier." + std::to_string(rank), std::ios::binary).write(a.data(), a.size());
  std::ofstream(dir + "/flat." + std::to_string(rank), std::ios::binary).write(b.data(), b.size());
}

std::vector<char> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Two "hosts" of two processes each, told apart only by their labels: `auto` builds
// the hierarchical communicator, and its average of the example gradient matches the
// flat Gloo ring's within f32 tolerance (and is identical on every rank).
TEST(HierarchicalProcessTest, TwoHostsOfTwoMatchTheFlatRing) {
  constexpr int kSize = 4;
  const Hosts hosts = {"host-a", "host-a", "host-b", "host-b"};
  char tmpl[] = "/tmp/hier-proc-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const auto pids = testing::SpawnSelf(kSize, "HierarchicalProcessChild.Rank", [&](int r) {
    return std::vector<std::string>{"SHOAL_HIER_TEST_DIR=" + dir, "SHOAL_HIER_TEST_RANK=" + std::to_string(r),
                                    "SHOAL_HIER_TEST_SIZE=" + std::to_string(kSize),
                                    "SHOAL_HIER_TEST_HOST=" + hosts[r]};
  });
  ASSERT_EQ(pids.size(), static_cast<size_t>(kSize));
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  const auto ref = testing::ReferenceReduce(DType::kF32, kSize, 235146, ReduceOp::kAverage, false);
  const auto h0 = ReadAll(dir + "/hier.0");
  ASSERT_EQ(h0.size(), 235146 * sizeof(float));
  for (int r = 0; r < kSize; ++r) {
    std::ifstream backend(dir + "/backend." + std::to_string(r));
    std::string name;
    backend >> name;
    EXPECT_EQ(name, "hierarchical") << "rank " << r;
    EXPECT_TRUE(ReadAll(dir + "/hier." + std::to_string(r)) == h0) << "rank " << r << " differs";
  }
  const auto h = Decode(h0, DType::kF32), g = Decode(ReadAll(dir + "/flat.0"), DType::kF32);
  ASSERT_EQ(g.size(), h.size());
  double worst = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    // f32: a few additions and one division apart, each within 2^-24 of the
    // magnitude; 1e-5 of it is far above that and far below any real disagreement.
    const double tol = 1e-5 * ref.magnitude[i];
    ASSERT_NEAR(h[i], g[i], tol) << "element " << i;
    ASSERT_NEAR(h[i], ref.value[i], tol) << "element " << i;
    worst = std::max(worst, static_cast<double>(std::fabs(h[i] - g[i])));
  }
  std::printf("largest |hierarchical - flat ring| over %zu elements: %.3g\n", h.size(), worst);
  if (std::system(("rm -rf " + dir).c_str()) != 0) ADD_FAILURE() << "could not remove " << dir;
}

}  // namespace
}  // namespace shoal

// CoordinatorKvStore against a real coordinator server (in memory, on a free port):
// a long-poll Get on one thread must not hold up a Set on another.
#include "worker/coordinator_kv.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/server.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

class CoordinatorKvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions opts;
    opts.bind = "tcp://127.0.0.1:*";
    opts.in_memory = true;
    auto server = CoordinatorServer::Create(opts);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    server_->Start();
  }
  void TearDown() override {
    if (server_) server_->Stop();
  }

  std::unique_ptr<CoordinatorServer> server_;
};

TEST_F(CoordinatorKvStoreTest, SetThenGet) {
  CoordinatorKvStore kv(server_->endpoint());
  ASSERT_TRUE(kv.Set("j/gen-1/a", "addr-a").ok());
  auto v = kv.Get("j/gen-1/a", 5s);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "addr-a");
}

TEST_F(CoordinatorKvStoreTest, GetOfMissingKeyEndsAtItsDeadline) {
  CoordinatorKvStore kv(server_->endpoint());
  const auto start = Clock::now();
  auto v = kv.Get("j/gen-1/never", 300ms);
  EXPECT_EQ(v.status().code(), StatusCode::kDeadlineExceeded) << v.status().ToString();
  EXPECT_LT(SecondsSince(start), 3.0);
}

// The rendezvous pattern: one thread waits for a peer's key while another publishes
// this rank's. With one client behind one mutex the Set waited for the whole long poll
// (here 20 s) and the Get then timed out; now the Set returns at once and satisfies it.
TEST_F(CoordinatorKvStoreTest, LongPollGetDoesNotBlockSetOnAnotherThread) {
  CoordinatorKvStore kv(server_->endpoint());
  ASSERT_TRUE(kv.Set("j/gen-1/warm", "x").ok());  // connected client in the pool
  std::atomic<bool> getting{false};
  auto getter = std::async(std::launch::async, [&] {
    getting = true;
    return kv.Get("j/gen-1/peer", 20s);
  });
  while (!getting) std::this_thread::yield();
  // Give the Get time to reach the coordinator and park there. Without a hook into the
  // server this is a sleep; if it is too short on a loaded machine the Set merely runs
  // first and the test proves less, it never fails wrongly.
  std::this_thread::sleep_for(300ms);
  const auto start = Clock::now();
  const Status set = kv.Set("j/gen-1/peer", "addr-peer");
  const double set_seconds = SecondsSince(start);
  ASSERT_TRUE(set.ok()) << set.ToString();
  EXPECT_LT(set_seconds, 5.0);  // far below the Get's 20 s: it did not wait behind it
  ASSERT_EQ(getter.wait_for(10s), std::future_status::ready);
  auto v = getter.get();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "addr-peer");
}

// More threads at once than the pool keeps idle: every call gets a client of its own.
TEST_F(CoordinatorKvStoreTest, ManyThreadsRendezvous) {
  CoordinatorKvStore kv(server_->endpoint());
  constexpr int kThreads = 2 * static_cast<int>(CoordinatorKvStore::kMaxIdleClients);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each waits for its successor's key before publishing its own would deadlock
      // under one lock; publish first, then read everyone's.
      if (!kv.Set("j/gen-2/" + std::to_string(t), std::to_string(t)).ok()) ++failures;
      for (int p = 0; p < kThreads; ++p) {
        auto v = kv.Get("j/gen-2/" + std::to_string(p), 10s);
        if (!v.ok() || *v != std::to_string(p)) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

// The coordinator restarts (here: a new, empty one on the same endpoint) while a Get
// is parked on it and a Set is about to be sent: both are repeated, so the rendezvous
// goes on a moment after the restart instead of failing or waiting out its whole
// timeout (found by the chaos soak: 10 s lost publishing an address across a restart).
TEST_F(CoordinatorKvStoreTest, AGetAndASetOutliveACoordinatorRestart) {
  const std::string endpoint = server_->endpoint();
  CoordinatorKvStore waiting(endpoint), publishing(endpoint);
  const auto start = Clock::now();
  auto got = std::async(std::launch::async, [&] { return waiting.Get("j/gen-1/peer", 20s); });
  std::this_thread::sleep_for(300ms);  // the Get is parked on the first coordinator
  server_->Stop();
  server_.reset();
  auto set = std::async(std::launch::async, [&] { return publishing.Set("j/gen-1/peer", "addr"); });
  std::this_thread::sleep_for(500ms);  // the coordinator is away
  ServerOptions opts;
  opts.bind = endpoint;
  opts.in_memory = true;
  auto again = CoordinatorServer::Create(opts);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  server_ = std::move(again).value();
  server_->Start();
  EXPECT_TRUE(set.get().ok());
  auto v = got.get();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "addr");
  // Correctness, not speed: without the retries the Get waits out its 20 s (+5).
  EXPECT_LT(SecondsSince(start), 10.0);
}

}  // namespace
}  // namespace shoal

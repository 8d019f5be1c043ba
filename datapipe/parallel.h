// Tiny fork-join helpers for the scan and the verifier: a handful of calls per scan, so
// plain std::threads (no pool) are cheap enough and keep ownership obvious.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace shoal {

inline int DefaultThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

// fn(begin, end, worker) over [0, n) cut into `threads` contiguous chunks. Runs inline
// when one thread suffices, so small inputs pay no thread start-up.
inline void ParallelChunks(int64_t n, int threads, const std::function<void(int64_t, int64_t, int)>& fn) {
  threads = static_cast<int>(std::clamp<int64_t>(threads, 1, std::max<int64_t>(n, 1)));
  if (threads == 1) {
    fn(0, n, 0);
    return;
  }
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] { fn(n * t / threads, n * (t + 1) / threads, t); });
  for (auto& th : pool) th.join();
}

// fn(i, worker) for every i in [0, n), handed out one by one: for uneven work items.
inline void ParallelForEach(int64_t n, int threads, const std::function<void(int64_t, int)>& fn) {
  threads = static_cast<int>(std::clamp<int64_t>(threads, 1, std::max<int64_t>(n, 1)));
  std::atomic<int64_t> next{0};
  auto run = [&](int t) {
    for (int64_t i = next++; i < n; i = next++) fn(i, t);
  };
  if (threads == 1) {
    run(0);
    return;
  }
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(run, t);
  for (auto& th : pool) th.join();
}

}  // namespace shoal

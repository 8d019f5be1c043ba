// Scoped single-threaded OpenBLAS. The scan runs its own worker threads; OpenBLAS's
// threads would compete with them for the cores and spin in sched_yield between calls
// (a fifth of all CPU time on two cores), so while a scan runs OpenBLAS gets one thread
// and every parallel loop is ours. The previous setting is restored on exit.
#pragma once

#include <cblas.h>

namespace shoal {

class SingleThreadedBlas {
 public:
  explicit SingleThreadedBlas(bool active = true) : prev_(active ? openblas_get_num_threads() : 0) {
    if (prev_ > 1) openblas_set_num_threads(1);
  }
  ~SingleThreadedBlas() {
    if (prev_ > 1) openblas_set_num_threads(prev_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int prev_;
};

}  // namespace shoal

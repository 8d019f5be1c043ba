// ckpt_crash_writer: saves signed checkpoints of a few MiB in a loop through
// AsyncCheckpointer until killed. checkpoint_crash_test kill -9's it at random moments;
// each start removes the previous run's leftovers (AsyncCheckpointer::Create).
//   ckpt_crash_writer JOB_DIR SECRET_KEY [MIB=3] [KEEP_LAST=3] [KEEP_EVERY_STEPS=5]
// The state of step S is testing::MakeSnapshot(S, MIB MiB, S) with the rank state
// testing::MakeRankState(S, 0, kRankStateBytes), so a test can check the bytes it loads.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "checkpoint/async_writer.h"
#include "checkpoint/job_dir.h"
#include "checkpoint/test_util.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s JOB_DIR SECRET_KEY [MIB] [KEEP_LAST] [KEEP_EVERY_STEPS]\n", argv[0]);
    return 2;
  }
  const size_t mib = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 3;
  shoal::AsyncCheckpointerOptions o;
  o.job_dir = argv[1];
  o.sign_key_path = argv[2];
  o.retention.keep_last = argc > 4 ? std::atoi(argv[4]) : 3;
  o.retention.keep_every_steps = argc > 5 ? std::atoi(argv[5]) : 5;
  auto cp = shoal::AsyncCheckpointer::Create(o);
  if (!cp.ok()) {
    std::fprintf(stderr, "ckpt_crash_writer: %s\n", cp.status().ToString().c_str());
    return 1;
  }
  auto steps = shoal::ListCommittedSteps(o.job_dir);
  int64_t step = steps.ok() && !steps->empty() ? steps->back() + 1 : 1;
  for (;; ++step) {
    shoal::TrainerSnapshot snap = shoal::testing::MakeSnapshot(static_cast<uint64_t>(step), mib << 20, step);
    snap.rank_tensors = {shoal::testing::MakeRankState(static_cast<uint64_t>(step), 0, shoal::testing::kRankStateBytes)};
    shoal::Status s = (*cp)->SaveAsync(std::move(snap));
    if (!s.ok()) {
      std::fprintf(stderr, "ckpt_crash_writer: %s\n", s.ToString().c_str());
      return 1;
    }
    ::usleep(2000);  // "training" between saves; both buffers stay busy most of the time
    shoal::Status e = (*cp)->last_error();
    if (!e.ok()) {
      std::fprintf(stderr, "ckpt_crash_writer: %s\n", e.ToString().c_str());
      return 1;
    }
  }
}

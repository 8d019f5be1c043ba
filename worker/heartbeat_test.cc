// RendezvousTimeout: found by the chaos soak (a joiner killed once placed held its new
// generation's other members in Gloo's connect for the 60 s collectives.timeout_s).
#include "worker/heartbeat.h"

#include <gtest/gtest.h>

#include "spec/jobspec_loader.h"

namespace shoal {
namespace {

using std::chrono::milliseconds;

TEST(RendezvousTimeout, AJoinerThatDiesWhileTheOthersConnectHoldsThemJustPastTheHeartbeatTimeout) {
  JobSpec spec = DefaultJobSpec();  // collectives.timeout_s 60, workers.heartbeat_timeout_s 5
  EXPECT_EQ(RendezvousTimeout(spec, "gloo"), milliseconds(6000));
  EXPECT_EQ(RendezvousTimeout(spec, "auto"), milliseconds(6000));
  EXPECT_EQ(RendezvousTimeout(spec, "shm"), milliseconds(6000));
  spec.mutable_workers()->set_heartbeat_timeout_s(0.5);
  EXPECT_EQ(RendezvousTimeout(spec, "gloo"), milliseconds(2000)) << "never below 2 s";
  spec.mutable_collectives()->set_timeout_s(1.5);
  EXPECT_EQ(RendezvousTimeout(spec, "gloo"), milliseconds(1500)) << "never beyond the collectives' own timeout";
}

TEST(RendezvousTimeout, NcclAndMpiKeepTheCollectivesTimeout) {
  JobSpec spec = DefaultJobSpec();
  EXPECT_EQ(RendezvousTimeout(spec, "nccl"), milliseconds(60000));
  EXPECT_EQ(RendezvousTimeout(spec, "mpi"), milliseconds(60000));
}

}  // namespace
}  // namespace shoal

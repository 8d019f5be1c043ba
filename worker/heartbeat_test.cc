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

namespace shoal {
namespace {

// The chaos soak's regroup loop: a worker fenced as m2 registered again as m5 while a
// beat for m2 was in flight; its "fenced" answer stuck to m5 and ended every later
// generation at its first boundary (one step per generation until m5 died).
TEST(HeartbeatThreadTest, AnAnswerForAnEarlierMemberIdIsIgnored) {
  // Nothing listens there, so the loop's own beats are never answered; its call timeout
  // (twice the interval, at least 1 s) bounds how long the destructor waits for it.
  HeartbeatThread hb("tcp://127.0.0.1:1", "job/m2", 0.05, nullptr);
  HeartbeatResponse fenced;
  fenced.set_job_state(JOB_RUNNING);
  fenced.set_fenced(true);
  fenced.set_fence_reason("job/m2 is dead");
  hb.SetMember("job/m5");
  hb.SetGeneration(7);
  hb.Apply("job/m2", 6, fenced);
  EXPECT_FALSE(hb.fenced());
  HeartbeatResponse boundary;
  boundary.set_job_state(JOB_RUNNING);
  boundary.set_generation(7);
  boundary.set_regroup(REGROUP_AT_BOUNDARY);
  hb.Apply("job/m2", 7, boundary);
  EXPECT_FALSE(hb.boundary_pending());
  // The same answers for the current member do count.
  hb.Apply("job/m5", 7, boundary);
  EXPECT_TRUE(hb.boundary_pending());
  hb.Apply("job/m5", 7, fenced);
  EXPECT_TRUE(hb.fenced());
}

// Trace clock alignment: offset = server time - midpoint of the round trip, from the
// beat with the shortest round trip; its half is the uncertainty.
TEST(HeartbeatThreadTest, ClockOffsetComesFromTheShortestRoundTrip) {
  HeartbeatThread hb("tcp://127.0.0.1:1", "job/m0", 0.05, nullptr);
  EXPECT_EQ(hb.clock_offset().samples, 0);
  hb.AddClockSample(1000, 1400, 5000);  // rtt 400: offset 5000 - 1200
  EXPECT_EQ(hb.clock_offset().offset_us, 3800);
  EXPECT_EQ(hb.clock_offset().uncertainty_us, 200);
  hb.AddClockSample(2000, 2100, 5100);  // rtt 100: better, offset 5100 - 2050
  EXPECT_EQ(hb.clock_offset().offset_us, 3050);
  EXPECT_EQ(hb.clock_offset().uncertainty_us, 50);
  hb.AddClockSample(3000, 3900, 9999);  // rtt 900: kept out
  EXPECT_EQ(hb.clock_offset().offset_us, 3050);
  hb.AddClockSample(4000, 4010, 0);     // a coordinator that does not say its time
  EXPECT_EQ(hb.clock_offset().offset_us, 3050);
  EXPECT_EQ(hb.clock_offset().samples, 3);
}

}  // namespace
}  // namespace shoal

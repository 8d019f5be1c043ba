// Helpers shared by the coordinator's core tests (coordinator_test.cc, membership_test.cc):
// a fixture that drives one Coordinator directly with a fake clock `now_` (Ray-style: no
// sockets, no sleeps) and an Inbox that collects responses answered later (long polls).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "coordinator/coordinator.h"
#include "coordinator/store.h"
#include "spec/jobspec_loader.h"

namespace shoal::coordinator_test {

inline JobSpec TwoWorkerSpec() {
  JobSpec spec = DefaultJobSpec();
  spec.set_name("t");
  spec.mutable_workers()->set_initial(2);
  spec.mutable_workers()->set_min(1);
  return spec;
}

// Collects responses, including those answered later (long polls).
struct Inbox {
  std::vector<Response> got;
  Responder Take() {
    return [this](Response r) { got.push_back(std::move(r)); };
  }
};

class CoordinatorCoreTest : public ::testing::Test {
 protected:
  // A pointer so that a test can replace it with a restarted coordinator.
  std::unique_ptr<Coordinator> coord_ = std::make_unique<Coordinator>(NewMemoryStore());
  int64_t now_ = 1'000'000;

  Response Call(const Request& req) {
    Inbox inbox;
    coord_->Handle(req, now_, inbox.Take());
    EXPECT_EQ(inbox.got.size(), 1u);
    return inbox.got.empty() ? Response() : inbox.got[0];
  }
  std::string Submit(const JobSpec& spec) {
    Request r;
    *r.mutable_submit()->mutable_spec() = spec;
    r.mutable_submit()->set_job_id("job1");
    Response resp = Call(r);
    EXPECT_EQ(resp.code(), 0) << resp.error();
    return resp.submit().job_id();
  }
  // elastic false is the proto's default: a worker whose backend cannot regroup (mpi).
  Response Register(const std::string& job, int launcher_rank = -1, bool elastic = false, int pid = 1) {
    Request r;
    r.mutable_register_()->set_job_id(job);
    r.mutable_register_()->set_host("h");
    r.mutable_register_()->set_pid(pid);
    r.mutable_register_()->set_launcher_rank(launcher_rank);
    r.mutable_register_()->set_elastic(elastic);
    return Call(r);
  }
  Request Await(const std::string& member) {
    Request r;
    r.set_id(77);
    r.mutable_await_assignment()->set_member_id(member);
    return r;
  }
  Response Heartbeat(const std::string& member, int64_t step) {
    Request r;
    r.mutable_heartbeat()->set_member_id(member);
    r.mutable_heartbeat()->mutable_metrics()->set_step(step);
    return Call(r);
  }
};

}  // namespace shoal::coordinator_test

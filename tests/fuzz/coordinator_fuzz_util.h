// Shared by the coordinator's fuzz targets (fuzz_coordinator_request, _state): the
// framing their inputs use, a realistic job spec, builders for the
// protocol's requests, and a store whose entries the seed builders can read back.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include "control.pb.h"
#include "coordinator/coordinator.h"
#include "coordinator/store.h"
#include "spec/jobspec_loader.h"

namespace shoal::fuzz {

// Every event is logged at info and protobuf logs every string with invalid UTF-8:
// millions of lines would measure the terminal, not the coordinator.
inline void Quiet() {
  static google::protobuf::LogSilencer silence;
  static const bool once = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)once;
}

// Inputs are records separated by kSeparator. A separator rather than length prefixes:
// a blind mutation (fuzz_driver.cc has no coverage feedback) that inserts or deletes a
// byte then spoils one record, not the framing of every record after it. libFuzzer
// finds the separator in the seeds.
inline constexpr char kSeparator[] = "\xf5\xf5SH";
inline constexpr size_t kSeparatorSize = sizeof(kSeparator) - 1;

// At most `max` records; the last runs to the end of the input.
inline std::vector<std::string_view> SplitRecords(const uint8_t* data, size_t size, size_t max) {
  std::vector<std::string_view> out;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  while (out.size() < max) {
    const size_t at = in.find(std::string_view(kSeparator, kSeparatorSize));
    out.push_back(in.substr(0, at));
    if (at == std::string_view::npos) break;
    in.remove_prefix(at + kSeparatorSize);
  }
  return out;
}

inline std::string JoinRecords(const std::vector<std::string>& records) {
  std::string out;
  for (size_t i = 0; i < records.size(); ++i) {
    if (i > 0) out.append(kSeparator, kSeparatorSize);
    out += records[i];
  }
  return out;
}

// examples/fashion-mnist.yaml (read once; the defaults it documents if it cannot be
// read), with a few workers and short timeouts so that deaths and regroups happen
// within a fuzz input's clock.
inline const JobSpec& FashionMnistSpec() {
  static const JobSpec spec = [] {
    JobSpec s = DefaultJobSpec();
#ifdef SHOAL_SOURCE_DIR
    std::ifstream f(std::string(SHOAL_SOURCE_DIR) + "/examples/fashion-mnist.yaml");
    std::stringstream text;
    text << f.rdbuf();
    auto parsed = ParseJobSpec(text.str(), {}, "fashion-mnist.yaml");
    if (parsed.ok()) s = *parsed;
#endif
    s.set_name("fm");
    s.mutable_workers()->set_initial(2);
    s.mutable_workers()->set_min(1);
    s.mutable_workers()->set_max(4);
    s.mutable_workers()->set_heartbeat_interval_s(0.5);
    s.mutable_workers()->set_heartbeat_timeout_s(5);
    s.mutable_workers()->set_regroup_window_s(1);
    s.mutable_workers()->set_min_grace_s(30);
    s.mutable_workers()->set_max_restarts(2);
    return s;
  }();
  return spec;
}

// ---- requests of the protocol (coordinator.h's steps) -------------------------------

inline Request Submit(const std::string& job, int initial = 2) {
  Request r;
  r.set_id(1);
  *r.mutable_submit()->mutable_spec() = FashionMnistSpec();
  r.mutable_submit()->mutable_spec()->mutable_workers()->set_initial(initial);
  r.mutable_submit()->set_job_id(job);
  return r;
}
inline Request Register(const std::string& job, int pid, bool elastic, int launcher_rank = -1, int launcher_size = 0) {
  Request r;
  r.set_id(2);
  auto* g = r.mutable_register_();
  g->set_job_id(job);
  g->set_host("node-" + std::to_string(pid % 3));
  g->set_pid(pid);
  g->set_launcher_rank(launcher_rank);
  g->set_launcher_size(launcher_size);
  g->set_elastic(elastic);
  return r;
}
// The ledger rank 0 keeps: generation 1 trained steps 0-49, a later generation the
// steps from 50 on; 128 records a step.
inline Ledger MakeLedger(int64_t end, int64_t generation = 1) {
  Ledger l;
  l.set_records(60000);
  l.set_seed(42);
  auto add = [&l](int64_t begin, int64_t stop, int64_t g) {
    LedgerRange* r = l.add_ranges();
    r->set_step_begin(begin);
    r->set_step_end(stop);
    r->set_epoch(0);
    r->set_cursor_begin(begin * 128);
    r->set_cursor_end(stop * 128);
    r->set_generation(g);
    r->set_world(2);
    r->set_batch(128);
  };
  if (end <= 0) return l;
  if (generation <= 1 || end <= 50) {
    add(0, end, 1);
  } else {
    add(0, 50, 1);
    add(50, end, generation);
  }
  return l;
}
inline Request Await(const std::string& member, int64_t ended_generation = 0, int64_t step = 0, bool failed = false,
                     bool leaving = false) {
  Request r;
  r.set_id(3);
  auto* a = r.mutable_await_assignment();
  a->set_member_id(member);
  a->set_ended_generation(ended_generation);
  a->set_committed_step(step);
  a->set_has_state(ended_generation > 0);
  a->set_failed(failed);
  if (failed) a->set_error("gloo: connection reset by peer");
  a->set_leaving(leaving);
  if (ended_generation > 0) *a->mutable_ledger() = MakeLedger(step, ended_generation);
  return r;
}
inline Request Heartbeat(const std::string& member, int64_t generation, int64_t step, bool ledger = false) {
  Request r;
  r.set_id(4);
  auto* h = r.mutable_heartbeat();
  h->set_member_id(member);
  h->set_generation(generation);
  auto* m = h->mutable_metrics();
  m->set_step(step);
  m->set_loss(0.5);
  m->set_total_steps(4690);
  m->set_gpu_seconds(step * 0.1);
  m->set_test_accuracy(-1);
  if (ledger) *h->mutable_ledger() = MakeLedger(step, generation);
  return r;
}
inline Request KvSet(const std::string& key, const std::string& value) {
  Request r;
  r.set_id(5);
  r.mutable_kv_set()->set_key(key);
  r.mutable_kv_set()->set_value(value);
  return r;
}
inline Request KvGet(const std::vector<std::string>& keys, int64_t timeout_ms) {
  Request r;
  r.set_id(6);
  for (const auto& k : keys) r.mutable_kv_get()->add_keys(k);
  r.mutable_kv_get()->set_timeout_ms(timeout_ms);
  return r;
}
inline Request Finish(const std::string& member, bool success) {
  Request r;
  r.set_id(7);
  auto* f = r.mutable_finish();
  f->set_member_id(member);
  f->set_success(success);
  if (!success) f->set_error("CUDA error: out of memory");
  f->mutable_result()->set_final_test_accuracy(0.86);
  f->mutable_result()->set_steps(4690);
  f->mutable_metrics()->set_gpu_seconds(12.5);
  *f->mutable_ledger() = MakeLedger(4690);
  return r;
}
inline Request CheckpointCommit(const std::string& job, const std::string& member, int64_t generation, int64_t step) {
  Request r;
  r.set_id(8);
  auto* c = r.mutable_checkpoint_commit();
  auto* rec = c->mutable_record();
  rec->set_job_id(job);
  rec->set_step(step);
  rec->set_path("/ckpt/" + job + "/step-" + std::to_string(step));
  rec->set_manifest_digest(std::string(64, 'a'));
  rec->set_signer_key_id("ed25519:3f2a");
  c->set_member_id(member);
  c->set_generation(generation);
  *c->mutable_ledger() = MakeLedger(step, generation);
  return r;
}
inline Request Leave(const std::string& member) {
  Request r;
  r.set_id(9);
  r.mutable_leave()->set_member_id(member);
  return r;
}
inline Request Scale(const std::string& job, int size) {
  Request r;
  r.set_id(10);
  r.mutable_scale()->set_job_id(job);
  r.mutable_scale()->set_size(size);
  return r;
}
inline Request GenerationReport(const std::string& member, int64_t generation, int64_t step) {
  Request r;
  r.set_id(11);
  auto* g = r.mutable_generation_report();
  g->set_member_id(member);
  g->set_generation(generation);
  g->set_detect_seconds(0.4);
  g->set_regroup_seconds(1.1);
  g->set_rendezvous_seconds(0.2);
  g->set_sync_seconds(0.3);
  g->set_first_step_seconds(0.05);
  g->set_first_step_unix_ms(1'700'000'000'000);
  g->set_step(step);
  return r;
}
inline Request LedgerOf(const std::string& job) {
  Request r;
  r.set_id(12);
  r.mutable_ledger()->set_job_id(job);
  return r;
}
inline Request ReportExit(const std::string& job, int pid) {
  Request r;
  r.set_id(13);
  auto* e = r.mutable_report_exit();
  e->set_job_id(job);
  e->set_host("node-" + std::to_string(pid % 3));
  e->set_pid(pid);
  e->set_how("killed by signal 9");
  return r;
}
inline Request Events(const std::string& job, int64_t after = 0) {
  Request r;
  r.set_id(14);
  r.mutable_events()->set_job_id(job);
  r.mutable_events()->set_after_seq(after);
  return r;
}
inline Request StatusOf(const std::string& job = "") {
  Request r;
  r.set_id(15);
  r.mutable_status()->set_job_id(job);
  return r;
}
inline Request Cancel(const std::string& job) {
  Request r;
  r.set_id(16);
  r.mutable_cancel()->set_job_id(job);
  r.mutable_cancel()->set_reason("cancelled by fuzz seed");
  return r;
}
inline Request CheckpointList(const std::string& job) {
  Request r;
  r.set_id(17);
  r.mutable_checkpoint_list()->set_job_id(job);
  return r;
}

// A store shared with whoever built it: the coordinator owns a SharedStore, the seed
// builder keeps the MemoryStore behind it and dumps its entries afterwards.
class SharedStore : public StateStore {
 public:
  explicit SharedStore(std::shared_ptr<StateStore> s) : s_(std::move(s)) {}
  Status Put(const std::string& k, const std::string& v) override { return s_->Put(k, v); }
  Status PutBatch(const std::vector<std::pair<std::string, std::string>>& kvs) override { return s_->PutBatch(kvs); }
  StatusOr<std::string> Get(const std::string& k) override { return s_->Get(k); }
  Status Delete(const std::string& k) override { return s_->Delete(k); }
  StatusOr<std::vector<std::pair<std::string, std::string>>> Scan(const std::string& p) override {
    return s_->Scan(p);
  }

 private:
  std::shared_ptr<StateStore> s_;
};

// How deep the inputs got, printed at exit when SHOAL_FUZZ_STATS is set: blind
// mutation that only ever reaches the framing checks would pass without testing much.
struct Stats {
  uint64_t inputs = 0, deep = 0;  // deep: requests handled / states Load accepted
  ~Stats() {
    if (std::getenv("SHOAL_FUZZ_STATS"))
      std::fprintf(stderr, "fuzz stats: %llu inputs, %llu deep\n", static_cast<unsigned long long>(inputs),
                   static_cast<unsigned long long>(deep));
  }
};
inline Stats& Counters() {
  static Stats stats;
  return stats;
}

// Responders that check the contract a client relies on: a response echoes its
// request's id and comes at most once (a poll a newer one replaced is never answered).
inline Responder Checked(uint64_t id) {
  auto calls = std::make_shared<int>(0);
  return [id, calls](Response r) {
    if (++*calls > 1 || r.id() != id) std::abort();
  };
}

}  // namespace shoal::fuzz

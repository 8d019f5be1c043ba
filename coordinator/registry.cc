// Checkpoint registry and data ledger in the state store (ckpt/<job>/<step>, ledger/<job>).
#include "coordinator/registry.h"

#include <algorithm>
#include <cstdio>

namespace shoal {

namespace {
std::string StepKey(int64_t step) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%012lld", static_cast<long long>(step));
  return buf;
}
}  // namespace

Status CheckpointRegistry::Commit(const CheckpointRecord& rec, int64_t now_ms) {
  if (rec.step() < 0 || rec.manifest_digest().size() != 64) return InvalidArgument("malformed checkpoint record");
  CheckpointRecord stored = rec;
  stored.set_committed_ms(now_ms);
  return store_->Put("ckpt/" + rec.job_id() + "/" + StepKey(rec.step()), stored.SerializeAsString());
}

std::vector<CheckpointRecord> CheckpointRegistry::Of(const std::string& job_id) const {
  std::vector<CheckpointRecord> out;
  auto entries = store_->Scan("ckpt/" + job_id + "/");
  if (!entries.ok()) return out;
  for (auto& [k, v] : *entries) {
    CheckpointRecord r;
    if (r.ParseFromString(v)) out.push_back(r);
  }
  return out;
}

Ledger LedgerBook::Of(const std::string& job_id) const {
  Ledger l;
  auto bytes = store_->Get("ledger/" + job_id);
  if (bytes.ok() && !l.ParseFromString(*bytes)) l.Clear();  // corrupt: an empty ledger fails the check loudly
  return l;
}

Status LedgerBook::Offer(const std::string& job_id, const Ledger& offered) {
  // Well-formed: ranges in step order, each non-empty and adjacent to the previous one.
  // The first starts at 0, or at the step of the checkpoint a job was resumed from
  // (its ledger starts there: the steps before belong to the job that made it).
  int64_t expect = offered.ranges().empty() ? 0 : offered.ranges(0).step_begin();
  for (const LedgerRange& r : offered.ranges()) {
    if (r.step_begin() != expect || r.step_end() <= r.step_begin() || r.cursor_end() < r.cursor_begin() ||
        r.cursor_begin() < 0 || r.epoch() < 0)
      return InvalidArgument("ledger range at step " + std::to_string(r.step_begin()) + " is malformed");
    expect = r.step_end();
  }
  Ledger stored = Of(job_id);
  if (LedgerEnd(offered) <= LedgerEnd(stored)) return OkStatus();
  if (stored.ranges_size() > 0 && offered.ranges_size() > 0 &&
      stored.ranges(0).step_begin() != offered.ranges(0).step_begin())
    return FailedPrecondition("ledger of job " + job_id + " starts at step " +
                              std::to_string(offered.ranges(0).step_begin()) + ", the stored one at step " +
                              std::to_string(stored.ranges(0).step_begin()));
  // The offered ledger must extend the stored one: the same ranges up to the stored
  // end (the last stored range may have grown since).
  for (int i = 0; i < stored.ranges_size(); ++i) {
    const LedgerRange& a = stored.ranges(i);
    if (i >= offered.ranges_size()) break;
    const LedgerRange& b = offered.ranges(i);
    const bool last = i + 1 == stored.ranges_size();
    const bool same = a.step_begin() == b.step_begin() && a.epoch() == b.epoch() &&
                      a.cursor_begin() == b.cursor_begin() && a.generation() == b.generation() &&
                      (last ? b.step_end() >= a.step_end() : a.step_end() == b.step_end());
    if (!same)
      return FailedPrecondition("ledger of job " + job_id + " disagrees with the stored one at step " +
                                std::to_string(a.step_begin()));
  }
  return store_->Put("ledger/" + job_id, offered.SerializeAsString());
}

Status LedgerBook::TruncateTo(const std::string& job_id, int64_t step) {
  return store_->Put("ledger/" + job_id, LedgerBefore(Of(job_id), step).SerializeAsString());
}

}  // namespace shoal

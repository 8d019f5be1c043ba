// Checkpoint registry and data ledger in the state store (ckpt/<job>/<step>, ledger/<job>).
#include "coordinator/registry.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace shoal {

namespace {
std::string StepKey(int64_t step) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%012lld", static_cast<long long>(step));
  return buf;
}

// Ranges in step order, each non-empty and adjacent to the previous one. The first
// starts at 0, or at the step of the checkpoint a job was resumed from (its ledger
// starts there: the steps before belong to the job that made it), never below 0.
// A cut (LedgerBefore, at a regroup) computes cursor_begin + batch * steps: batch must
// not be negative nor so large that this overflows int64 (a heartbeat's ledger with a
// batch of 2^62 made the next regroup's cut undefined behaviour).
Status CheckRanges(const Ledger& ledger) {
  int64_t expect = ledger.ranges().empty() ? 0 : ledger.ranges(0).step_begin();
  if (expect < 0) return InvalidArgument("ledger starts at step " + std::to_string(expect));
  for (const LedgerRange& r : ledger.ranges()) {
    if (r.step_begin() != expect || r.step_end() <= r.step_begin() || r.cursor_end() < r.cursor_begin() ||
        r.cursor_begin() < 0 || r.epoch() < 0 || r.batch() < 0 ||
        (r.batch() > 0 && r.step_end() - r.step_begin() > (INT64_MAX - r.cursor_begin()) / r.batch()))
      return InvalidArgument("ledger range at step " + std::to_string(r.step_begin()) + " is malformed");
    expect = r.step_end();
  }
  return OkStatus();
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

Status CheckpointRegistry::CheckStored() const {
  ASSIGN_OR_RETURN(auto entries, store_->Scan("ckpt/"));
  for (auto& [k, v] : entries) {
    CheckpointRecord r;
    if (!r.ParseFromString(v) || r.step() < 0 || r.manifest_digest().size() != 64 ||
        k != "ckpt/" + r.job_id() + "/" + StepKey(r.step()))
      return DataLoss("state entry " + k + " is corrupt: not a committed checkpoint record");
  }
  return OkStatus();
}

Status LedgerBook::CheckStored() const {
  ASSIGN_OR_RETURN(auto entries, store_->Scan("ledger/"));
  for (auto& [k, v] : entries) {
    Ledger l;
    if (!l.ParseFromString(v)) return DataLoss("state entry " + k + " is corrupt");
    Status s = CheckRanges(l);
    if (!s.ok()) return DataLoss("state entry " + k + " is corrupt: " + s.message());
  }
  return OkStatus();
}

Ledger LedgerBook::Of(const std::string& job_id) const {
  Ledger l;
  auto bytes = store_->Get("ledger/" + job_id);
  if (bytes.ok() && !l.ParseFromString(*bytes)) l.Clear();  // corrupt: an empty ledger fails the check loudly
  return l;
}

Status LedgerBook::Offer(const std::string& job_id, const Ledger& offered) {
  RETURN_IF_ERROR(CheckRanges(offered));
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

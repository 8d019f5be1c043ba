// The coordinator's records of what a job produced: committed checkpoints (the
// registry shoalctl status and checkpoint list read) and the data ledger (which records
// every committed step consumed). Both live in the state store, so a restarted
// coordinator keeps them.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "control.pb.h"
#include "coordinator/store.h"
#include "proto/ledger.h"

namespace shoal {

class CheckpointRegistry {
 public:
  explicit CheckpointRegistry(StateStore* store) : store_(store) {}
  Status Commit(const CheckpointRecord& record, int64_t now_ms);
  // Committed checkpoints of a job, oldest first; corrupt entries are skipped.
  std::vector<CheckpointRecord> Of(const std::string& job_id) const;
  // For Coordinator::Load: kDataLoss naming the first stored record that does not
  // parse, or is not one Commit would have stored under its key.
  Status CheckStored() const;

 private:
  StateStore* store_;
};

// One ledger per job. The ledger is the step history of the model the job is training:
// a member's ledger is taken when it reaches further than the stored one, and is cut
// back when the job rolls back (a resume from a checkpoint loses the steps after it).
class LedgerBook {
 public:
  explicit LedgerBook(StateStore* store) : store_(store) {}
  // Keeps `ledger` if its last step is beyond the stored one's and it agrees with the
  // stored ranges before that (a ledger that rewrites history is refused).
  Status Offer(const std::string& job_id, const Ledger& ledger);
  // Drops every range from `step` on (ranges are cut at it).
  Status TruncateTo(const std::string& job_id, int64_t step);
  Ledger Of(const std::string& job_id) const;
  // For Coordinator::Load: kDataLoss naming the first stored ledger that does not
  // parse or is not well-formed (as Offer checks an offered one).
  Status CheckStored() const;

 private:
  StateStore* store_;
};

}  // namespace shoal

// `shoalctl ledger --check`: reads a job's data ledger as a proof that every admitted
// record was used exactly once per epoch, across every generation and world size the
// job went through. Pure: no I/O, so the rules are unit-tested on hand-built ledgers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "control.pb.h"

namespace shoal {

struct LedgerCheck {
  bool ok = false;
  // Human-readable, each naming the steps, positions and records involved; at most
  // kMaxLedgerProblems, then one "... and N more".
  std::vector<std::string> problems;
  int64_t steps = 0;            // committed steps: the last range's end
  int64_t epochs_complete = 0;  // epochs whose every position was used
  int64_t records = 0;          // per epoch (the ledger's admitted records)
};

constexpr int kMaxLedgerProblems = 20;

// The rules:
//  - ranges are non-empty and contiguous in steps from step 0 (gaps and overlaps name
//    the steps); a range's positions agree with its steps and batch;
//  - generations never go back in step order: steps committed by an older generation
//    after a newer one's would mean two generations trained at once (split brain);
//  - epochs appear in order 0, 1, 2, ... and never beyond the spec's `epochs`;
//  - within an epoch the cursor ranges, in step order, tile [0, records): positions
//    used twice or never are named, with the first few record indices they stand for
//    (through the epoch's seeded order);
//  - every epoch before the last one present is complete;
//  - a completed job: max_steps == 0: its last epoch is complete and there are
//    `epochs` of them; max_steps > 0: it ran max_steps steps (or all its epochs, when
//    they end first), its last epoch may stop part-way. An empty ledger or 0 records
//    is refused.
// A job still running (or failed, cancelled) passes when what it committed so far used
// no record twice and skipped none.
LedgerCheck CheckLedger(const Ledger& l, int32_t epochs, int64_t max_steps, bool job_completed);

// "0-99" for the half-open [0, 100): how steps and positions are shown to people.
std::string InclusiveSpan(int64_t begin, int64_t end);

}  // namespace shoal

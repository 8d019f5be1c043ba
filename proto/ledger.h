// Operations on the data ledger (control.proto's Ledger) that its writers (the trainer)
// and its keeper (the coordinator) share.
#pragma once

#include <cstdint>

#include "control.pb.h"

namespace shoal {

// The step just after the last range (0 for an empty ledger).
int64_t LedgerEnd(const Ledger& ledger);

// The ledger's history before `step`: ranges from `step` on are dropped, one that
// straddles it is cut (every step of a range takes `batch` records but an epoch's last,
// which ends the range, so the cut falls on whole batches).
Ledger LedgerBefore(const Ledger& ledger, int64_t step);

}  // namespace shoal

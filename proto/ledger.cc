// LedgerEnd and LedgerBefore.
#include "proto/ledger.h"

#include <algorithm>

namespace shoal {

int64_t LedgerEnd(const Ledger& ledger) {
  return ledger.ranges().empty() ? 0 : ledger.ranges(ledger.ranges_size() - 1).step_end();
}

Ledger LedgerBefore(const Ledger& ledger, int64_t step) {
  Ledger cut;
  cut.set_records(ledger.records());
  cut.set_seed(ledger.seed());
  for (const LedgerRange& r : ledger.ranges()) {
    if (r.step_begin() >= step) break;
    LedgerRange* k = cut.add_ranges();
    *k = r;
    if (r.step_end() > step) {
      k->set_step_end(step);
      k->set_cursor_end(std::min(r.cursor_end(), r.cursor_begin() + r.batch() * (step - r.step_begin())));
    }
  }
  return cut;
}

}  // namespace shoal

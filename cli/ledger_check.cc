// The data ledger's check: steps, then epochs, then each epoch's positions.
#include "cli/ledger_check.h"

#include <algorithm>
#include <map>
#include <set>

#include "datapipe/partition.h"

namespace shoal {

std::string InclusiveSpan(int64_t begin, int64_t end) {
  if (end - begin == 1) return std::to_string(begin);
  return std::to_string(begin) + "-" + std::to_string(end - 1);
}

namespace {

// Record indices are named through the epoch's order, which costs 4 bytes a record to
// build: past this many records positions are named alone.
constexpr int64_t kMaxRecordsToName = int64_t{1} << 27;
constexpr int64_t kRecordIdsShown = 5;

std::string Plural(int64_t n, const std::string& word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

// "step 4" or "steps 4-9" for the half-open [begin, end).
std::string Named(const std::string& word, int64_t begin, int64_t end) {
  return word + (end - begin == 1 ? " " : "s ") + InclusiveSpan(begin, end);
}
const char* Were(int64_t count) { return count == 1 ? "was" : "were"; }
// "epoch 2 is missing" or "epochs 2-4 are missing" for the half-open [begin, end).
std::string MissingEpochs(int64_t begin, int64_t end) {
  return Named("epoch", begin, end) + (end - begin == 1 ? " is" : " are") + " missing";
}

// One range's positions, clamped to the epoch order; `range` is its index in the ledger.
struct Interval {
  int64_t begin = 0, end = 0;
  int range = 0;
};

class Checker {
 public:
  explicit Checker(const Ledger& l) : l_(l) {}

  void Add(std::string problem) {
    if (static_cast<int>(problems_.size()) < kMaxLedgerProblems)
      problems_.push_back(std::move(problem));
    else
      ++more_;
  }

  std::vector<std::string> Take() {
    if (more_ > 0) problems_.push_back("... and " + std::to_string(more_) + " more");
    return std::move(problems_);
  }

  // "steps 100-199 (generation 3, world 4)"
  std::string Steps(int i) const {
    const LedgerRange& r = l_.ranges(i);
    return Named("step", r.step_begin(), r.step_end()) + " (generation " + std::to_string(r.generation()) +
           ", world " + std::to_string(r.world()) + ")";
  }

  // "positions 96-127 (32 positions; records 4821, 17, 3390, 2, 598, ...)"
  std::string Positions(int64_t epoch, int64_t begin, int64_t end) {
    const int64_t count = end - begin;
    std::string note = count > 1 ? Plural(count, "position") : "";
    if (l_.records() <= kMaxRecordsToName) {
      std::vector<uint32_t>& order = orders_[epoch];
      if (order.empty()) order = EpochPermutation(static_cast<uint64_t>(l_.records()), l_.seed(), epoch);
      note += std::string(note.empty() ? "" : "; ") + (count == 1 ? "record " : "records ");
      for (int64_t p = begin; p < end && p < begin + kRecordIdsShown; ++p)
        note += (p > begin ? ", " : "") + std::to_string(order[static_cast<size_t>(p)]);
      if (count > kRecordIdsShown) note += ", ...";
    }
    const std::string s = Named("position", begin, end);
    return note.empty() ? s : s + " (" + note + ")";
  }

 private:
  const Ledger& l_;
  std::map<int64_t, std::vector<uint32_t>> orders_;
  std::vector<std::string> problems_;
  int64_t more_ = 0;
};

}  // namespace

LedgerCheck CheckLedger(const Ledger& l, int32_t epochs, int64_t max_steps, bool job_completed) {
  LedgerCheck out;
  out.records = l.records();
  Checker c(l);
  const int n = l.ranges_size();
  const int64_t records = l.records();

  if (n == 0) {
    if (job_completed) c.Add("the ledger of a completed job is empty: it records no committed step");
    out.problems = c.Take();
    out.ok = out.problems.empty();
    return out;
  }
  if (records <= 0) {
    c.Add("the ledger admits " + std::to_string(records) +
          " records: there is no epoch order to check its positions against");
    out.problems = c.Take();
    return out;
  }

  // Steps: contiguous from 0, every range non-empty, its positions matching its steps.
  // Also gathers each epoch's positions and checks that epochs come in order.
  std::map<int64_t, std::vector<Interval>> by_epoch;
  std::set<int64_t> beyond_spec;
  int64_t next_step = 0, epoch = -1;
  int prev = -1;  // the range that reached next_step
  for (int i = 0; i < n; ++i) {
    const LedgerRange& r = l.ranges(i);
    if (r.step_end() <= r.step_begin()) {
      c.Add("range " + std::to_string(i) + " holds no step (steps [" + std::to_string(r.step_begin()) + ", " +
            std::to_string(r.step_end()) + "))");
      continue;
    }
    if (r.step_begin() > next_step) {
      c.Add(Named("step", next_step, r.step_begin()) + " missing from the ledger: " +
            (prev < 0 ? "it begins with " + c.Steps(i) : c.Steps(prev) + " is followed by " + c.Steps(i)));
    } else if (r.step_begin() < next_step) {
      c.Add(Named("step", r.step_begin(), std::min(next_step, r.step_end())) + " recorded twice: " + c.Steps(prev) +
            " and " + c.Steps(i) + " overlap");
    }
    // One generation trains at a time: a step committed by an older generation after a
    // newer one had taken over would mean two trained at once (split brain).
    if (prev >= 0 && r.generation() < l.ranges(prev).generation())
      c.Add(c.Steps(i) + " comes after " + c.Steps(prev) +
            ": an older generation committed steps after a newer one (two generations trained at once)");
    if (r.step_end() > next_step) {
      next_step = r.step_end();
      prev = i;
    }

    const int64_t steps = r.step_end() - r.step_begin(), taken = r.cursor_end() - r.cursor_begin();
    if (r.cursor_begin() < 0 || r.cursor_end() > records || taken <= 0) {
      c.Add(c.Steps(i) + " took positions [" + std::to_string(r.cursor_begin()) + ", " +
            std::to_string(r.cursor_end()) + ") of epoch " + std::to_string(r.epoch()) +
            ", not a part of its order of " + Plural(records, "record"));
    } else if (r.batch() > 0 && (taken > r.batch() * steps || taken <= r.batch() * (steps - 1))) {
      // Every step takes `batch` records but an epoch's last, which takes fewer.
      c.Add(c.Steps(i) + " took " + Plural(taken, "position") + ", which " + Plural(steps, "step") + " of batch " +
            std::to_string(r.batch()) + " cannot take");
    }

    if (r.epoch() < 0) {
      c.Add(c.Steps(i) + " trained epoch " + std::to_string(r.epoch()) + ", which is negative");
      continue;
    }
    if (r.epoch() < epoch) {
      c.Add(c.Steps(i) + " went back to epoch " + std::to_string(r.epoch()) + " after epoch " + std::to_string(epoch) +
            ": epochs must come in order");
    } else if (r.epoch() > epoch + 1) {
      c.Add(epoch < 0 ? "the ledger begins in epoch " + std::to_string(r.epoch()) + ", not 0 (" + c.Steps(i) + ")"
                      : c.Steps(i) + " jumped from epoch " + std::to_string(epoch) + " to " +
                            std::to_string(r.epoch()) + ": " + MissingEpochs(epoch + 1, r.epoch()));
    }
    epoch = std::max(epoch, r.epoch());
    if (epochs > 0 && r.epoch() >= epochs && beyond_spec.insert(r.epoch()).second)
      c.Add(c.Steps(i) + " trained epoch " + std::to_string(r.epoch()) + ", beyond the spec's " +
            Plural(epochs, "epoch"));
    const int64_t b = std::clamp<int64_t>(r.cursor_begin(), 0, records);
    const int64_t e = std::clamp<int64_t>(r.cursor_end(), 0, records);
    if (e > b) by_epoch[r.epoch()].push_back(Interval{b, e, i});
  }
  out.steps = next_step;
  const int64_t last_epoch = epoch;

  // Each epoch's positions: sorted, they must cover [0, records) once. A sweep finds
  // the positions used twice and those never used.
  bool last_complete = false;
  for (auto& [ep, in_step_order] : by_epoch) {
    std::vector<Interval> sorted = in_step_order;
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const Interval& a, const Interval& b) { return a.begin < b.begin; });
    const std::string name = "epoch " + std::to_string(ep);
    int64_t covered = 0;
    int covering = -1;
    bool gap = false, twice = false;
    for (const Interval& iv : sorted) {
      if (iv.begin > covered) {
        gap = true;
        c.Add(name + ": " + c.Positions(ep, covered, iv.begin) + " " + Were(iv.begin - covered) + " never used: " +
              (covering < 0 ? "the epoch's first positions were taken by " + c.Steps(iv.range)
                            : "they fall between " + c.Steps(covering) + " and " + c.Steps(iv.range)));
      } else if (iv.begin < covered) {
        twice = true;
        const int64_t end = std::min(iv.end, covered);
        c.Add(name + ": " + c.Positions(ep, iv.begin, end) + " " + Were(end - iv.begin) + " used twice, by " +
              c.Steps(covering) + " and by " + c.Steps(iv.range));
      }
      if (iv.end > covered) {
        covered = iv.end;
        covering = iv.range;
      }
    }
    const bool complete = !gap && covered == records;
    if (complete) ++out.epochs_complete;
    if (ep == last_epoch) last_complete = complete;
    if (covered < records) {
      if (ep != last_epoch) {
        c.Add(name + " is incomplete: " + c.Positions(ep, covered, records) + " " + Were(records - covered) +
              " never used before epoch " + std::to_string(ep + 1) + " began");
      } else if (job_completed && max_steps == 0) {
        c.Add(name + ", the last, is incomplete: " + c.Positions(ep, covered, records) + " " + Were(records - covered) +
              " never used, yet the job completed");
      }
    }
    // Covered exactly once, but the ranges must also follow each other in step order.
    if (!gap && !twice) {
      int64_t at = 0;
      for (const Interval& iv : in_step_order) {
        if (iv.begin != at) {
          c.Add(name + ": " + c.Steps(iv.range) + " took positions " + InclusiveSpan(iv.begin, iv.end) +
                " out of order: the steps before them ended at position " + std::to_string(at));
          break;
        }
        at = iv.end;
      }
    }
  }

  // What a completed job must have done: all its epochs, or max_steps steps.
  if (max_steps > 0 && out.steps > max_steps)
    c.Add("the ledger records " + Plural(out.steps, "step") + ", more than max_steps " + std::to_string(max_steps));
  if (job_completed && last_epoch >= 0) {
    const bool all_epochs = epochs > 0 && last_epoch + 1 == epochs && last_complete;
    if (max_steps == 0 && epochs > 0 && last_epoch + 1 < epochs) {
      c.Add("the job completed after " + Plural(last_epoch + 1, "epoch") + " but the spec asks for " +
            std::to_string(epochs) + ": " + MissingEpochs(last_epoch + 1, epochs) + " from the ledger");
    } else if (max_steps > 0 && out.steps < max_steps && !all_epochs) {
      // The trainer stops at max_steps or at the end of its epochs, whichever is first.
      c.Add("the job completed after " + Plural(out.steps, "step") + ", short of max_steps " +
            std::to_string(max_steps) + " with " + Plural(out.epochs_complete, "complete epoch") + " of " +
            std::to_string(epochs));
    }
  }

  out.problems = c.Take();
  out.ok = out.problems.empty();
  return out;
}

}  // namespace shoal

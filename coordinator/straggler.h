// Straggler detection: which member of a synchronous data-parallel job is slower than
// its peers. Every rank's *step* time is equal (all wait for the allreduce), so the
// signal is each rank's own work per step, compute + loader wait, from its heartbeats.
// Each member keeps a window of its recent samples; a member whose window median is a
// robust outlier against its peers' medians is flagged (docs/ARCHITECTURE.md,
// "Observability"). Pure logic, driven with explicit times: no clock, no I/O.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace shoal {

// How much of a member's history counts: the last 10 s of heartbeats (20 at the
// default 0.5 s interval). Short enough that a slowed rank is flagged within seconds,
// long enough that the median ignores a single noisy reporting window.
constexpr int64_t kStragglerWindowMs = 10'000;
// A member with fewer samples in its window is not judged (and not counted as a peer):
// a joiner's first window is dominated by warm-up.
constexpr int kStragglerMinSamples = 3;
// Flag: at least 1.5x the peers' median work time AND a modified z-score (Iglewicz and
// Hoaglin: 0.6745 (x - median) / MAD) of at least 3.5, their recommended outlier cut.
// The ratio keeps a tight group from flagging a rank 10% slower (a real but harmless
// difference); the z-score keeps a noisy group from flagging its slowest member.
constexpr double kStragglerFlagRatio = 1.5;
constexpr double kStragglerFlagZ = 3.5;
// Cleared below 1.25x or z 2: hysteresis, so a rank near the line does not flap.
constexpr double kStragglerClearRatio = 1.25;
constexpr double kStragglerClearZ = 2.0;
// The peers' MAD is floored at 5% of their median: identical peers (MAD 0) would make
// every difference infinitely significant. Below this spread the ratio test decides.
constexpr double kStragglerMadFloor = 0.05;

struct StragglerVerdict {
  double ratio = 1;        // the member's median over its peers' median
  double z = 0;            // modified z-score against the peers (0 with one peer)
  bool straggler = false;  // after hysteresis
};

// The rule, as a pure function: `medians[i]` is member i's median work time,
// `flagged[i]` whether it is flagged now. Each member is judged against the others
// (leave-one-out). With one peer (2 members) there is no spread to measure: the ratio
// test alone decides. Fewer than 2 members: nobody is a straggler.
std::vector<StragglerVerdict> JudgeStragglers(const std::vector<double>& medians, const std::vector<bool>& flagged);

double Median(std::vector<double> values);

// The per-member windows of work-time samples.
class StragglerWindows {
 public:
  // A heartbeat's work per step (compute + loader wait); samples <= 0 (no step yet) are ignored.
  void Observe(const std::string& member, int64_t now_ms, double work_seconds);
  void Forget(const std::string& member);
  // The median of the member's samples in the window ending at now_ms, or nothing when
  // it has fewer than kStragglerMinSamples there.
  std::optional<double> WindowMedian(const std::string& member, int64_t now_ms);
  size_t tracked() const { return windows_.size(); }

 private:
  struct Sample {
    int64_t ms;
    double seconds;
  };
  void Trim(std::deque<Sample>& w, int64_t now_ms);
  std::map<std::string, std::deque<Sample>> windows_;
};

}  // namespace shoal

// The straggler rule (straggler.h) and the per-member sample windows.
#include "coordinator/straggler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace shoal {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  if (v.size() % 2 == 1) return v[mid];
  const double upper = v[mid];
  const double lower = *std::max_element(v.begin(), v.begin() + mid);
  return (lower + upper) / 2;
}

namespace {
// Up to this many members, each is judged against exactly its peers (leave-one-out,
// O(n^2)). Beyond, the peers' median is still exact (read off the sorted medians
// around the member) but the spread is the whole group's MAD, computed once: one
// member more or less barely moves it at that size, and the rule stays O(n log n).
constexpr size_t kExactPeerLimit = 64;

struct PeerStats {
  double median = 0;
  double mad = 0;
  size_t count = 0;
};

// The median of `sorted` without the element at index `skip`.
double MedianWithout(const std::vector<double>& sorted, size_t skip) {
  const size_t n = sorted.size() - 1;
  auto at = [&](size_t k) { return sorted[k < skip ? k : k + 1]; };
  return n % 2 == 1 ? at(n / 2) : (at(n / 2 - 1) + at(n / 2)) / 2;
}
}  // namespace

std::vector<StragglerVerdict> JudgeStragglers(const std::vector<double>& medians, const std::vector<bool>& flagged) {
  const size_t n = medians.size();
  std::vector<StragglerVerdict> out(n);
  if (n < 2) return out;
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return medians[a] < medians[b]; });
  std::vector<double> sorted(n);
  std::vector<size_t> position(n);
  for (size_t k = 0; k < n; ++k) {
    sorted[k] = medians[order[k]];
    position[order[k]] = k;
  }
  double group_mad = 0;
  if (n > kExactPeerLimit) {
    const double group_median = Median(medians);
    std::vector<double> deviations;
    for (double m : medians) deviations.push_back(std::fabs(m - group_median));
    group_mad = Median(std::move(deviations));
  }
  for (size_t i = 0; i < n; ++i) {
    PeerStats peers;
    peers.count = n - 1;
    peers.median = MedianWithout(sorted, position[i]);
    if (peers.count >= 2 && n <= kExactPeerLimit) {
      std::vector<double> deviations;
      for (size_t j = 0; j < n; ++j)
        if (j != i) deviations.push_back(std::fabs(medians[j] - peers.median));
      peers.mad = Median(std::move(deviations));
    } else {
      peers.mad = group_mad;
    }
    if (peers.median <= 0) continue;  // nothing measured to compare with
    StragglerVerdict& v = out[i];
    v.ratio = medians[i] / peers.median;
    bool spread_says_outlier = true, spread_says_cleared = false;
    if (peers.count >= 2) {
      const double mad = std::max(peers.mad, kStragglerMadFloor * peers.median);
      v.z = 0.6745 * (medians[i] - peers.median) / mad;
      spread_says_outlier = v.z >= kStragglerFlagZ;
      spread_says_cleared = v.z < kStragglerClearZ;
    }
    const bool was = i < flagged.size() && flagged[i];
    if (was)
      v.straggler = !(v.ratio < kStragglerClearRatio || spread_says_cleared);
    else
      v.straggler = v.ratio >= kStragglerFlagRatio && spread_says_outlier;
  }
  return out;
}

void StragglerWindows::Trim(std::deque<Sample>& w, int64_t now_ms) {
  while (!w.empty() && w.front().ms <= now_ms - kStragglerWindowMs) w.pop_front();
}

void StragglerWindows::Observe(const std::string& member, int64_t now_ms, double work_seconds) {
  if (!(work_seconds > 0) || !std::isfinite(work_seconds)) return;
  auto& w = windows_[member];
  w.push_back({now_ms, work_seconds});
  Trim(w, now_ms);
}

void StragglerWindows::Forget(const std::string& member) { windows_.erase(member); }

std::optional<double> StragglerWindows::WindowMedian(const std::string& member, int64_t now_ms) {
  auto it = windows_.find(member);
  if (it == windows_.end()) return std::nullopt;
  Trim(it->second, now_ms);
  if (static_cast<int>(it->second.size()) < kStragglerMinSamples) return std::nullopt;
  std::vector<double> values;
  for (const Sample& s : it->second) values.push_back(s.seconds);
  return Median(std::move(values));
}

}  // namespace shoal

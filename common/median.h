// The median of a sample: the middle value, or the mean of the two middle values of an
// even count; 0 for an empty sample. For benchmarks' repeated timings and the data
// filters' robust statistics.
#pragma once

#include <algorithm>
#include <vector>

namespace shoal {

// Reorders `v` (O(n), no copy): for scratch buffers on hot paths.
inline double MedianInPlace(std::vector<double>& v) {
  if (v.empty()) return 0.0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  const double hi = v[mid];
  if (v.size() % 2) return hi;
  return 0.5 * (*std::max_element(v.begin(), v.begin() + mid) + hi);
}

inline double Median(std::vector<double> v) { return MedianInPlace(v); }

}  // namespace shoal

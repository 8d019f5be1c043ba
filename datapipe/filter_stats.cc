// The per-class robust outlier filter (median and MAD of each record's distance to its
// class median in the shared projection), and the per-class feature statistics behind
// the label filter's trigger-neutralised view.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/median.h"
#include "datapipe/filters.h"
#include "datapipe/parallel.h"

namespace shoal {

namespace {
std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}
}  // namespace

namespace {
// 0.6745 * (v - median) / MAD for every value (the MAD falls back to the scaled mean
// absolute deviation when over half the values are equal, which would make it 0).
std::vector<double> RobustZ(const std::vector<double>& v, double* med_out) {
  std::vector<double> tmp = v;
  double med = MedianInPlace(tmp);
  for (auto& x : tmp) x = std::abs(x - med);
  double mad = MedianInPlace(tmp);
  if (mad <= 0) {
    double mean_ad = 0;
    for (double x : v) mean_ad += std::abs(x - med);
    mad = mean_ad / std::max<size_t>(v.size(), 1) * 0.7979;
  }
  std::vector<double> z(v.size(), 0.0);
  if (mad > 0)
    for (size_t i = 0; i < v.size(); ++i) z[i] = 0.6745 * (v[i] - med) / mad;
  *med_out = med;
  return z;
}
}  // namespace

std::vector<ClassFeatureStats> ComputeClassFeatureStats(const RecordTable& t, const std::vector<int64_t>& rows,
                                                        double floor, int threads) {
  const int f = t.dim();
  std::vector<std::vector<int64_t>> by_class(std::max(t.num_classes, 0));
  for (int64_t r : rows)
    if (t.labels[r] >= 0 && t.labels[r] < t.num_classes) by_class[t.labels[r]].push_back(r);
  std::vector<ClassFeatureStats> out(by_class.size());
  // Classes on the threads: each class's result depends only on its own sample.
  ParallelForEach(static_cast<int64_t>(by_class.size()), threads, [&](int64_t c, int) {
    const int64_t m = static_cast<int64_t>(by_class[c].size());
    if (m < 8) return;
    const int64_t ns = std::min<int64_t>(m, 500);
    std::vector<float> sample(static_cast<size_t>(ns) * f);
    for (int64_t i = 0; i < ns; ++i) t.ReadRow(by_class[c][i * m / ns], sample.data() + i * f);
    out[c].median.resize(f);
    out[c].inv_scale.resize(f);
    std::vector<double> col(ns);
    for (int j = 0; j < f; ++j) {
      for (int64_t i = 0; i < ns; ++i) col[i] = sample[i * f + j];
      double md = MedianInPlace(col);
      for (auto& v : col) v = std::abs(v - md);
      out[c].median[j] = static_cast<float>(md);
      out[c].inv_scale[j] = static_cast<float>(1.0 / std::max(1.4826 * MedianInPlace(col), floor));
    }
  });
  return out;
}

Projection NeutralizeExtremes(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& p,
                              const std::vector<ClassFeatureStats>& stats, double cut, int threads,
                              std::vector<int32_t>* changed, std::vector<std::vector<int32_t>>* features) {
  Projection q = p;
  std::vector<std::vector<int32_t>> moved(rows.size());
  const int f = t.dim(), dims = p.dims;
  // Where any class puts each feature: the hull of [median - cut sd, median + cut sd]
  // over classes. Only values outside every class's range are neutralised, so content
  // that is normal for some class (the evidence of a wrong label) is kept.
  std::vector<float> lo(f, INFINITY), hi(f, -INFINITY);
  for (const auto& s : stats) {
    if (s.median.empty()) continue;
    for (int j = 0; j < f; ++j) {
      float w = static_cast<float>(cut) / s.inv_scale[j];
      lo[j] = std::min(lo[j], s.median[j] - w);
      hi[j] = std::max(hi[j], s.median[j] + w);
    }
  }
  ParallelChunks(static_cast<int64_t>(rows.size()), threads, [&](int64_t b, int64_t e, int) {
    std::vector<float> x(f);
    for (int64_t i = b; i < e; ++i) {
      int32_t y = t.labels[rows[i]];
      if (y < 0 || y >= static_cast<int32_t>(stats.size()) || stats[y].median.empty()) continue;
      const ClassFeatureStats& s = stats[y];
      t.ReadRow(rows[i], x.data());
      float* z = q.z.data() + i * dims;
      for (int j = 0; j < f; ++j) {
        if (x[j] >= lo[j] && x[j] <= hi[j]) continue;
        const float dev = x[j] - s.median[j];
        const float* bj = p.basis.data() + static_cast<size_t>(j) * dims;
        for (int d = 0; d < dims; ++d) z[d] -= dev * bj[d];
        moved[i].push_back(j);
      }
    }
  });
  if (changed) changed->clear();
  if (features) features->clear();
  for (size_t i = 0; i < moved.size(); ++i) {
    if (moved[i].empty()) continue;
    if (changed) changed->push_back(static_cast<int32_t>(i));
    if (features) features->push_back(std::move(moved[i]));
  }
  return q;
}

std::vector<uint8_t> SharedTriggers(const std::vector<int32_t>& labels, const std::vector<std::vector<int32_t>>& features,
                                    const std::vector<int64_t>& label_counts, int dim, double share, int need) {
  const size_t n = labels.size();
  if (share <= 0) return std::vector<uint8_t>(n, 1);
  const int classes = static_cast<int>(label_counts.size());
  auto valid = [&](size_t i) { return labels[i] >= 0 && labels[i] < classes; };
  // How many accused records of each label have each feature out of range.
  std::vector<int32_t> count(static_cast<size_t>(classes) * dim, 0);
  for (size_t i = 0; i < n; ++i)
    if (valid(i))
      for (int32_t j : features[i])
        if (j >= 0 && j < dim) ++count[static_cast<size_t>(labels[i]) * dim + j];
  std::vector<uint8_t> keep(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (!valid(i)) continue;
    const int64_t cut =
        std::max<int64_t>(kMinTriggerShare, static_cast<int64_t>(std::ceil(share * label_counts[labels[i]])));
    const int32_t* c = count.data() + static_cast<size_t>(labels[i]) * dim;
    int shared = 0;
    for (int32_t j : features[i]) shared += j >= 0 && j < dim && c[j] >= cut;
    keep[i] = shared > 0 && shared >= std::min<int64_t>(need, static_cast<int64_t>(features[i].size()));
  }
  return keep;
}

std::vector<Flag> OutlierFilter(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& p,
                                double z_cut) {
  const int dims = p.dims;
  std::vector<std::vector<int64_t>> by_class(std::max(t.num_classes, 0));
  for (size_t i = 0; i < rows.size(); ++i) {
    int32_t y = t.labels[rows[i]];
    if (y >= 0 && y < t.num_classes) by_class[y].push_back(static_cast<int64_t>(i));
  }
  std::vector<Flag> out;
  for (int c = 0; c < t.num_classes; ++c) {
    const auto& members = by_class[c];
    const int64_t m = static_cast<int64_t>(members.size());
    if (m < 8) continue;  // too few members for a median and MAD to mean anything
    std::vector<double> center(dims), col(m), dist(m);
    for (int d = 0; d < dims; ++d) {
      for (int64_t i = 0; i < m; ++i) col[i] = p.row(members[i])[d];
      center[d] = MedianInPlace(col);
    }
    for (int64_t i = 0; i < m; ++i) {
      const float* z = p.row(members[i]);
      double s = 0;
      for (int d = 0; d < dims; ++d) s += (z[d] - center[d]) * (z[d] - center[d]);
      dist[i] = std::sqrt(s);
    }
    double med = 0;
    std::vector<double> z = RobustZ(dist, &med);
    for (int64_t i = 0; i < m; ++i) {
      if (z[i] <= z_cut) continue;
      out.push_back({rows[members[i]], z[i],
                     "robust z " + Fixed(z[i], 2) + " > " + Fixed(z_cut, 2) + " of the distance to class " +
                         std::to_string(c) + "'s median (" + Fixed(dist[i], 3) + ", class median " + Fixed(med, 3) +
                         ")"});
    }
  }
  std::sort(out.begin(), out.end(), [](const Flag& a, const Flag& b) { return a.row < b.row; });
  return out;
}

}  // namespace shoal

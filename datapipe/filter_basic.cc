// Record tables, the schema/range filter and exact duplicates. These are single passes
// over the raw bytes, split across threads by contiguous row ranges.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "datapipe/filters.h"
#include "datapipe/parallel.h"

namespace shoal {

RecordTable TableFromShards(const std::vector<ShardView>& shards, int num_classes, double value_min,
                            double value_max) {
  RecordTable t;
  t.num_classes = num_classes;
  t.value_min = value_min;
  t.value_max = value_max;
  int64_t n = 0;
  for (const auto& s : shards) n += s.count();
  t.features.reserve(n);
  t.labels.reserve(n);
  t.ids.reserve(n);
  t.shard.reserve(n);
  t.index_in_shard.reserve(n);
  for (size_t si = 0; si < shards.size(); ++si) {
    const ShardView& s = shards[si];
    t.layout = s.layout();
    t.shard_names.push_back(s.name());
    for (int64_t i = 0; i < s.count(); ++i) {
      t.features.push_back(s.features(i));
      t.labels.push_back(s.label(i));
      t.ids.push_back(s.first_record_id() + i);
      t.shard.push_back(static_cast<int32_t>(si));
      t.index_in_shard.push_back(i);
    }
  }
  return t;
}

RecordTable TableFromArrays(const float* x, const int32_t* y, int64_t n, int dim, int num_classes) {
  RecordTable t;
  t.layout = RecordLayout{static_cast<uint32_t>(dim), RecordDType::kF32, RecordDType::kI32};
  t.num_classes = num_classes;
  t.shard_names.push_back("memory");
  for (int64_t i = 0; i < n; ++i) {
    t.features.push_back(reinterpret_cast<const uint8_t*>(x + i * dim));
    t.labels.push_back(y[i]);
    t.ids.push_back(i);
    t.shard.push_back(0);
    t.index_in_shard.push_back(i);
  }
  return t;
}

void SeededGaussian(uint64_t seed, float* out, size_t n, float stddev) {
  uint64_t state = seed ^ 0x6A09E667F3BCC909ull;
  auto next = [&] {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  for (size_t i = 0; i < n; i += 2) {
    // Uniforms in (0, 1]: 53 random bits, never 0 so the log is finite.
    double u1 = ((next() >> 11) + 1) * 0x1.0p-53;
    double u2 = ((next() >> 11) + 1) * 0x1.0p-53;
    double r = std::sqrt(-2.0 * std::log(u1)) * stddev;
    out[i] = static_cast<float>(r * std::cos(2 * M_PI * u2));
    if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(2 * M_PI * u2));
  }
}

std::vector<Flag> SchemaFilter(const RecordTable& t, double tolerance, int threads) {
  const double lo = t.value_min - tolerance, hi = t.value_max + tolerance;
  const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
  // u8 features are read as value/255 in [0, 1]; they can only leave a declared range
  // that is narrower than that.
  const bool check_u8 = t.layout.feature_dtype == RecordDType::kU8 && (lo > 0.0 || hi < 1.0);
  const int dim = t.dim();
  std::vector<std::vector<Flag>> per(std::max(threads, 1));
  ParallelChunks(t.size(), threads, [&](int64_t b, int64_t e, int w) {
    for (int64_t r = b; r < e; ++r) {
      int32_t y = t.labels[r];
      if (y < 0 || y >= t.num_classes) {
        per[w].push_back({r, static_cast<double>(y),
                          "label " + std::to_string(y) + " outside [0, " + std::to_string(t.num_classes) + ")"});
        continue;
      }
      if (t.layout.feature_dtype == RecordDType::kF32) {
        const float* x = reinterpret_cast<const float*>(t.features[r]);
        bool ok = true;
        // Cheap pass first: one branch-free AND over the row; NaN fails both compares.
        for (int j = 0; j < dim; ++j) ok &= (x[j] >= flo) & (x[j] <= fhi);
        if (ok) continue;
        int nan = 0, inf = 0, range = 0, first = -1;
        for (int j = 0; j < dim; ++j) {
          bool bad = true;
          if (std::isnan(x[j])) ++nan;
          else if (std::isinf(x[j])) ++inf;
          else if (x[j] < lo || x[j] > hi) ++range;
          else bad = false;
          if (bad && first < 0) first = j;
        }
        std::string why = nan ? std::to_string(nan) + " NaN feature(s)" : inf ? std::to_string(inf) + " Inf feature(s)" : "";
        if (range) {
          if (!why.empty()) why += ", ";
          why += std::to_string(range) + " feature(s) outside [" + std::to_string(t.value_min) + ", " +
                 std::to_string(t.value_max) + "]";
        }
        if (first >= 0 && !std::isnan(x[first]))
          why += " (feature " + std::to_string(first) + " = " + std::to_string(x[first]) + ")";
        else if (first >= 0)
          why += " (first at feature " + std::to_string(first) + ")";
        per[w].push_back({r, static_cast<double>(nan + inf + range), why});
      } else if (check_u8) {
        int range = 0;
        for (int j = 0; j < dim; ++j) {
          double v = t.features[r][j] / 255.0;
          range += v < lo || v > hi;
        }
        if (range) per[w].push_back({r, static_cast<double>(range), std::to_string(range) + " feature(s) outside range"});
      }
    }
  });
  std::vector<Flag> out;
  for (auto& v : per) out.insert(out.end(), v.begin(), v.end());
  return out;
}

namespace {
uint64_t HashBytes(const uint8_t* p, size_t n) {
  uint64_t h = 0x243F6A8885A308D3ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 32);
}
}  // namespace

std::vector<Flag> ExactDuplicateFilter(const RecordTable& t, const std::vector<int64_t>& rows, int threads) {
  const size_t bytes = t.layout.feature_bytes();
  std::vector<std::pair<uint64_t, int64_t>> keyed(rows.size());
  ParallelChunks(static_cast<int64_t>(rows.size()), threads, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) keyed[i] = {HashBytes(t.features[rows[i]], bytes), rows[i]};
  });
  std::sort(keyed.begin(), keyed.end());
  std::vector<Flag> out;
  for (size_t i = 0; i < keyed.size();) {
    size_t j = i + 1;
    while (j < keyed.size() && keyed[j].first == keyed[i].first) ++j;
    // Within one hash value, split into classes of byte-identical rows (rows ascend).
    std::vector<int64_t> pending;
    for (size_t k = i; k < j; ++k) pending.push_back(keyed[k].second);
    while (pending.size() > 1) {
      std::vector<int64_t> same{pending[0]}, rest;
      for (size_t k = 1; k < pending.size(); ++k)
        (std::memcmp(t.features[pending[0]], t.features[pending[k]], bytes) == 0 ? same : rest).push_back(pending[k]);
      if (same.size() > 1) {
        std::set<int32_t> labels;
        for (int64_t r : same) labels.insert(t.labels[r]);
        if (labels.size() > 1) {
          std::string list;
          for (int32_t y : labels) {
            if (!list.empty()) list += ",";
            list += std::to_string(y);
          }
          std::string ids;
          for (size_t k = 0; k < same.size() && k < 4; ++k) {
            if (k) ids += ",";
            ids += std::to_string(t.ids[same[k]]);
          }
          if (same.size() > 4) ids += ",...";
          for (int64_t r : same)
            out.push_back({r, static_cast<double>(same.size()),
                           "identical content under conflicting labels {" + list + "} (records " + ids + ")"});
        } else {
          for (size_t k = 1; k < same.size(); ++k)
            out.push_back({same[k], static_cast<double>(same.size()),
                           "exact duplicate of record " + std::to_string(t.ids[same[0]]) + " (same label)"});
        }
      }
      pending.swap(rest);
    }
    i = j;
  }
  return out;
}

}  // namespace shoal

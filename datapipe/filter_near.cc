// Near duplicates with conflicting labels: SimHash + LSH banding for candidates, a
// Hamming check, then the exact RMS distance over the full features, so the cheap
// stages may over-include but the verdict is exact.
#include <cblas.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "datapipe/filters.h"
#include "datapipe/parallel.h"

namespace shoal {

namespace {
constexpr int kBits = 128;
// 8 x 16 bits: any pair at most 7 bits apart shares a band (pigeonhole), and pairs a
// few bits further still do with high probability.
constexpr int kBands = 8;
// A bucket larger than this (masses of near-identical content) is compared within a
// sliding window, so hostile input cannot make the scan quadratic.
constexpr size_t kMaxRun = 4096;

using Sig = std::array<uint64_t, 2>;
inline uint32_t BandKey(const Sig& s, int b) { return static_cast<uint32_t>((s[b / 4] >> ((b % 4) * 16)) & 0xFFFF); }
// SWAR popcount: the portable build has no POPCNT instruction, and libgcc's fallback
// is a function call per word.
inline int Popcount(uint64_t x) {
  x = x - ((x >> 1) & 0x5555555555555555ull);
  x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
  return static_cast<int>((x * 0x0101010101010101ull) >> 56);
}
inline int Hamming(const Sig& a, const Sig& b) { return Popcount(a[0] ^ b[0]) + Popcount(a[1] ^ b[1]); }

double RmsDistance(const RecordTable& t, int64_t a, int64_t b, bool* identical) {
  const int dim = t.dim();
  double s = 0;
  if (t.layout.feature_dtype == RecordDType::kU8) {
    const uint8_t* x = t.features[a];
    const uint8_t* y = t.features[b];
    int64_t acc = 0;
    for (int j = 0; j < dim; ++j) {
      int d = static_cast<int>(x[j]) - static_cast<int>(y[j]);
      acc += d * d;
    }
    s = static_cast<double>(acc) / (255.0 * 255.0);
  } else {
    const float* x = reinterpret_cast<const float*>(t.features[a]);
    const float* y = reinterpret_cast<const float*>(t.features[b]);
    for (int j = 0; j < dim; ++j) s += static_cast<double>(x[j] - y[j]) * (x[j] - y[j]);
  }
  *identical = std::memcmp(t.features[a], t.features[b], t.layout.feature_bytes()) == 0;
  return std::sqrt(s / dim);
}

// Four independent sums so the compiler can keep them in one SIMD register (a single
// running float sum must stay sequential without -ffast-math).
inline float SquaredDistance(const float* a, const float* b, int dims) {
  float acc[4] = {0, 0, 0, 0};
  int d = 0;
  for (; d + 4 <= dims; d += 4)
    for (int l = 0; l < 4; ++l) acc[l] += (a[d + l] - b[d + l]) * (a[d + l] - b[d + l]);
  for (; d < dims; ++d) acc[0] += (a[d] - b[d]) * (a[d] - b[d]);
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

std::string Fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4f", v);
  return buf;
}
}  // namespace

std::vector<Flag> NearDuplicateFilter(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& p,
                                      const NearDuplicateParams& params, uint64_t seed, int threads) {
  const int64_t n = static_cast<int64_t>(rows.size());
  if (n < 2 || p.dims <= 0) return {};
  // SimHash: signs of 128 random hyperplanes through the mean (the projection is
  // centred), so the Hamming distance estimates the angle between two records. The
  // projection is whitened first: in raw PCA coordinates a few directions dominate,
  // signs agree far too often, and buckets fill with pairs that are not duplicates
  // (23M candidate pairs on Fashion-MNIST instead of 0.9M).
  std::vector<float> planes(static_cast<size_t>(p.dims) * kBits);
  SeededGaussian(seed ^ 0x51A5A5A5ull, planes.data(), planes.size(), 1.0f);
  {
    std::vector<double> var(p.dims, 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int d = 0; d < p.dims; ++d) var[d] += static_cast<double>(p.row(i)[d]) * p.row(i)[d];
    for (int d = 0; d < p.dims; ++d) {
      float inv = static_cast<float>(1.0 / std::sqrt(std::max(var[d] / n, 1e-12)));
      for (int k = 0; k < kBits; ++k) planes[d * kBits + k] *= inv;
    }
  }
  std::vector<Sig> sig(n);
  constexpr int64_t kBlock = 4096;
  ParallelForEach((n + kBlock - 1) / kBlock, threads, [&](int64_t blk, int) {
    const int64_t b = blk * kBlock, m = std::min(kBlock, n - b);
    std::vector<float> dots(static_cast<size_t>(m) * kBits);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), kBits, p.dims, 1.0f, p.row(b), p.dims,
                planes.data(), kBits, 0.0f, dots.data(), kBits);
    for (int64_t i = 0; i < m; ++i) {
      Sig s{0, 0};
      for (int k = 0; k < kBits; ++k) s[k / 64] |= static_cast<uint64_t>(dots[i * kBits + k] > 0) << (k % 64);
      sig[b + i] = s;
    }
  });

  // Candidates per band. A pair is examined only in the first band it shares, so no
  // pair is checked twice and no set of seen pairs is needed.
  std::vector<std::vector<std::pair<int32_t, int32_t>>> cand(kBands);
  const float max_proj_d2 = static_cast<float>(3.0 * params.max_rms * params.max_rms * t.dim());
  ParallelForEach(kBands, threads, [&](int64_t band, int) {
    const int b = static_cast<int>(band);
    std::vector<uint64_t> keys(n);
    for (int64_t i = 0; i < n; ++i) keys[i] = (static_cast<uint64_t>(BandKey(sig[i], b)) << 32) | static_cast<uint64_t>(i);
    std::sort(keys.begin(), keys.end());
    // Members of a bucket are copied next to each other, sorted by label, first: the
    // pair loop below is the hot spot. Only pairs with different labels can conflict,
    // so each member is paired only with the members of later label groups.
    struct Member {
      int32_t label, idx;
      Sig sig;
    };
    std::vector<Member> mem;
    for (int64_t s = 0; s < n;) {
      int64_t e = s + 1;
      while (e < n && (keys[e] >> 32) == (keys[s] >> 32)) ++e;
      if (e - s < 2) {  // most buckets, once the signature is whitened
        s = e;
        continue;
      }
      mem.clear();
      for (int64_t i = s; i < e; ++i) {
        int32_t a = static_cast<int32_t>(keys[i] & 0xFFFFFFFF);
        mem.push_back({t.labels[rows[a]], a, sig[a]});
      }
      std::sort(mem.begin(), mem.end(), [](const Member& x, const Member& y) {
        return x.label != y.label ? x.label < y.label : x.idx < y.idx;
      });
      const int64_t m = e - s;
      int64_t next_group = 0;
      for (int64_t i = 0; i < m; ++i) {
        if (next_group <= i)
          for (next_group = i + 1; next_group < m && mem[next_group].label == mem[i].label;) ++next_group;
        const int64_t stop = std::min<int64_t>(m, next_group + static_cast<int64_t>(kMaxRun));
        for (int64_t j = next_group; j < stop; ++j) {
          if (Hamming(mem[i].sig, mem[j].sig) > params.max_hamming) continue;
          bool earlier = false;
          for (int bb = 0; bb < b && !earlier; ++bb) earlier = BandKey(mem[i].sig, bb) == BandKey(mem[j].sig, bb);
          if (earlier) continue;
          // The projection keeps squared distances within a factor 3 with overwhelming
          // probability (chi-square, 32+ dims), so this cheap test drops far pairs
          // before the exact check without losing true near duplicates.
          if (SquaredDistance(p.row(mem[i].idx), p.row(mem[j].idx), p.dims) <= max_proj_d2) cand[b].emplace_back(std::min(mem[i].idx, mem[j].idx), std::max(mem[i].idx, mem[j].idx));
        }
      }
      s = e;
    }
  });

  // Exact verdicts; each row keeps its closest conflicting partner.
  std::vector<std::pair<int32_t, int32_t>> all;
  for (auto& c : cand) all.insert(all.end(), c.begin(), c.end());
  std::vector<double> rms(all.size());
  std::vector<uint8_t> same(all.size());
  ParallelChunks(static_cast<int64_t>(all.size()), threads, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      bool identical = false;
      rms[i] = RmsDistance(t, rows[all[i].first], rows[all[i].second], &identical);
      same[i] = identical;
    }
  });
  std::vector<double> best(n, INFINITY);
  std::vector<int32_t> partner(n, -1);
  for (size_t i = 0; i < all.size(); ++i) {
    if (rms[i] > params.max_rms || (params.skip_identical && same[i])) continue;
    auto [a, c] = all[i];
    if (rms[i] < best[a] || (rms[i] == best[a] && c < partner[a])) best[a] = rms[i], partner[a] = c;
    if (rms[i] < best[c] || (rms[i] == best[c] && a < partner[c])) best[c] = rms[i], partner[c] = a;
  }
  std::vector<Flag> out;
  for (int64_t i = 0; i < n; ++i) {
    if (partner[i] < 0) continue;
    int64_t other = rows[partner[i]];
    out.push_back({rows[i], best[i],
                   "near duplicate (rms " + Fixed(best[i]) + " <= " + Fixed(params.max_rms) + ") of record " +
                       std::to_string(t.ids[other]) + " labelled " + std::to_string(t.labels[other])});
  }
  return out;
}

}  // namespace shoal

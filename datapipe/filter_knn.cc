// Approximate k nearest neighbours (an inverted file over k-means cells, distances by
// sgemm), the label filter's input. Brute force over 60k records in 32 dimensions is
// ~230 GFLOP, seconds on two cores; probing 8 cells of ~256 points cuts that 30-fold
// while keeping almost all true neighbours.
#include <cblas.h>

#include <algorithm>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cmath>

#include "datapipe/filters.h"
#include "datapipe/blas_guard.h"
#include "datapipe/parallel.h"

namespace shoal {

namespace {
constexpr int kMaxK = 64;
constexpr int64_t kQueryBlock = 256;  // bounds the distance block whatever the cell sizes

std::vector<float> RowNorms(const float* z, int64_t n, int dims) {
  std::vector<float> out(n);
  for (int64_t i = 0; i < n; ++i) {
    float s = 0;
    for (int d = 0; d < dims; ++d) s += z[i * dims + d] * z[i * dims + d];
    out[i] = s;
  }
  return out;
}

// Index of the nearest centroid for each of n points (sgemm per block).
void Assign(const float* z, int64_t n, int dims, const std::vector<float>& cent, int cells, int threads,
            std::vector<int32_t>* out) {
  std::vector<float> cn = RowNorms(cent.data(), cells, dims);
  out->resize(n);
  constexpr int64_t kBlock = 2048;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  ParallelForEach(blocks, threads, [&](int64_t blk, int) {
    const int64_t b = blk * kBlock, m = std::min(kBlock, n - b);
    std::vector<float> dot(static_cast<size_t>(m) * cells);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), cells, dims, 1.0f, z + b * dims, dims,
                cent.data(), dims, 0.0f, dot.data(), cells);
    for (int64_t i = 0; i < m; ++i) {
      const float* row = dot.data() + i * cells;
      int best = 0;
      float bd = cn[0] - 2 * row[0];
      for (int c = 1; c < cells; ++c) {
        float d = cn[c] - 2 * row[c];
        if (d < bd) bd = d, best = c;
      }
      (*out)[b + i] = best;
    }
  });
}

// Lloyd's k-means on a seeded sample; only the cells matter, not a perfect optimum.
std::vector<float> TrainCells(const float* z, int64_t n, int dims, int cells, uint64_t seed, int threads) {
  uint64_t state = seed | 1;
  auto next = [&] {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return state;
  };
  int64_t m = std::min<int64_t>(n, static_cast<int64_t>(cells) * 40);
  std::vector<int64_t> pick(n);
  for (int64_t i = 0; i < n; ++i) pick[i] = i;
  for (int64_t i = 0; i < m; ++i) std::swap(pick[i], pick[i + next() % (n - i)]);
  std::vector<float> sample(static_cast<size_t>(m) * dims);
  for (int64_t i = 0; i < m; ++i) std::copy(z + pick[i] * dims, z + (pick[i] + 1) * dims, sample.data() + i * dims);
  std::vector<float> cent(sample.begin(), sample.begin() + static_cast<size_t>(cells) * dims);
  std::vector<int32_t> assign;
  for (int iter = 0; iter < 6; ++iter) {
    Assign(sample.data(), m, dims, cent, cells, threads, &assign);
    std::vector<double> sum(static_cast<size_t>(cells) * dims, 0.0);
    std::vector<int64_t> count(cells, 0);
    for (int64_t i = 0; i < m; ++i) {
      ++count[assign[i]];
      for (int d = 0; d < dims; ++d) sum[assign[i] * dims + d] += sample[i * dims + d];
    }
    for (int c = 0; c < cells; ++c) {
      if (count[c] == 0) {  // re-seed an empty cell on a random sample point
        int64_t r = static_cast<int64_t>(next() % m);
        std::copy(sample.data() + r * dims, sample.data() + (r + 1) * dims, cent.data() + c * dims);
        continue;
      }
      for (int d = 0; d < dims; ++d) cent[c * dims + d] = static_cast<float>(sum[c * dims + d] / count[c]);
    }
  }
  return cent;
}

struct TopK {
  int k = 1, size = 0;
  float d[kMaxK];
  int32_t idx[kMaxK];
  void Push(float dist, int32_t i) {
    if (size == k && dist >= d[k - 1]) return;
    int p = size < k ? size++ : k - 1;
    while (p > 0 && d[p - 1] > dist) d[p] = d[p - 1], idx[p] = idx[p - 1], --p;
    d[p] = dist, idx[p] = i;
  }
};

// Per-worker scratch, reused across cells so the search does not fault in fresh pages.
struct Scratch {
  std::vector<int32_t> cand;
  std::vector<float> cbuf, cnorm, qbuf, dot;
};

// Neighbours of queries q[0..mq) among the candidates in s (original indices); the
// query's own index is skipped.
void SearchBlock(const float* z, int dims, const int32_t* q, int64_t mq, int k, Scratch& s, int32_t* out) {
  const int64_t mc = static_cast<int64_t>(s.cand.size());
  s.qbuf.resize(static_cast<size_t>(mq) * dims);
  for (int64_t i = 0; i < mq; ++i) std::copy(z + q[i] * int64_t{dims}, z + (q[i] + 1) * int64_t{dims}, s.qbuf.data() + i * dims);
  s.dot.resize(static_cast<size_t>(mq) * mc);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(mq), static_cast<int>(mc), dims, 1.0f,
              s.qbuf.data(), dims, s.cbuf.data(), dims, 0.0f, s.dot.data(), static_cast<int>(mc));
  for (int64_t i = 0; i < mq; ++i) {
    float* row = s.dot.data() + i * mc;
    const float* cn = s.cnorm.data();
    const int32_t* cand = s.cand.data();
    const int32_t self = q[i];
    // |q|^2 is the same for every candidate, so |c|^2 - 2 q.c ranks them.
    TopK top;
    top.k = k;
    float worst = INFINITY;
    auto consider = [&](float d, int64_t j) {
      if (d >= worst || cand[j] == self) return;
      top.Push(d, cand[j]);
      if (top.size == k) worst = top.d[k - 1];
    };
    int64_t j = 0;
#if defined(__SSE2__)
    // 16 candidates at a time: distances and their minimum in SSE registers; once the
    // top-k has filled, most blocks hold nobody closer than the current k-th and are
    // skipped after one compare.
    const __m128 two = _mm_set1_ps(2.0f);
    for (; j + 16 <= mc; j += 16) {
      __m128 d0 = _mm_sub_ps(_mm_loadu_ps(cn + j), _mm_mul_ps(two, _mm_loadu_ps(row + j)));
      __m128 d1 = _mm_sub_ps(_mm_loadu_ps(cn + j + 4), _mm_mul_ps(two, _mm_loadu_ps(row + j + 4)));
      __m128 d2 = _mm_sub_ps(_mm_loadu_ps(cn + j + 8), _mm_mul_ps(two, _mm_loadu_ps(row + j + 8)));
      __m128 d3 = _mm_sub_ps(_mm_loadu_ps(cn + j + 12), _mm_mul_ps(two, _mm_loadu_ps(row + j + 12)));
      __m128 m = _mm_min_ps(_mm_min_ps(d0, d1), _mm_min_ps(d2, d3));
      m = _mm_min_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
      m = _mm_min_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(1, 0, 3, 2)));
      if (_mm_cvtss_f32(m) >= worst) continue;
      alignas(16) float d[16];
      _mm_store_ps(d, d0), _mm_store_ps(d + 4, d1), _mm_store_ps(d + 8, d2), _mm_store_ps(d + 12, d3);
      for (int l = 0; l < 16; ++l) consider(d[l], j + l);
    }
#endif
    for (; j < mc; ++j) consider(cn[j] - 2 * row[j], j);
    int32_t* o = out + static_cast<int64_t>(q[i]) * k;
    for (int r = 0; r < k; ++r) o[r] = r < top.size ? top.idx[r] : -1;
  }
}
}  // namespace

std::vector<int32_t> ApproxKnn(const float* z, int64_t n, int dims, const KnnParams& params, uint64_t seed,
                               int threads, const std::vector<int32_t>* queries, KnnCells* reuse) {
  SingleThreadedBlas blas_guard(threads > 1);
  const int k = std::clamp(params.k, 1, kMaxK);
  std::vector<int32_t> out(static_cast<size_t>(n) * k, -1);
  if (n < 2) return out;
  std::vector<float> norms = RowNorms(z, n, dims);
  const int cells = static_cast<int>(std::clamp<int64_t>(n / std::max(params.cell_size, 16), 1, 8192));
  const int nprobe = std::clamp(params.nprobe, 1, cells);
  std::vector<int32_t> cell_of;
  std::vector<float> cent;
  const bool reusable = reuse && cells > 1 && reuse->centroids.size() == static_cast<size_t>(cells) * dims &&
                        reuse->cell_of.size() == static_cast<size_t>(n) && queries;
  if (cells == 1) {
    cell_of.assign(n, 0);
  } else if (reusable) {
    // Same cells as a previous search of these points; only the queries moved, so only
    // they are assigned again.
    cent = reuse->centroids;
    cell_of = reuse->cell_of;
    std::vector<float> qz(queries->size() * static_cast<size_t>(dims));
    for (size_t i = 0; i < queries->size(); ++i)
      std::copy(z + (*queries)[i] * int64_t{dims}, z + ((*queries)[i] + 1) * int64_t{dims}, qz.data() + i * dims);
    std::vector<int32_t> qcell;
    Assign(qz.data(), static_cast<int64_t>(queries->size()), dims, cent, cells, threads, &qcell);
    for (size_t i = 0; i < queries->size(); ++i) cell_of[(*queries)[i]] = qcell[i];
  } else {
    cent = TrainCells(z, n, dims, cells, seed, threads);
    Assign(z, n, dims, cent, cells, threads, &cell_of);
    if (reuse) reuse->centroids = cent, reuse->cell_of = cell_of;
  }
  // Members of each cell, contiguous (counting sort by cell).
  std::vector<int64_t> start(cells + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++start[cell_of[i] + 1];
  for (int c = 0; c < cells; ++c) start[c + 1] += start[c];
  std::vector<int32_t> members(n);
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) members[fill[cell_of[i]]++] = static_cast<int32_t>(i);
  }
  // Each cell probes the nprobe cells whose centroids are nearest to its own.
  std::vector<std::vector<int32_t>> probes(cells);
  for (int c = 0; c < cells; ++c) {
    if (cells == 1) {
      probes[c] = {0};
      continue;
    }
    std::vector<std::pair<float, int32_t>> d(cells);
    for (int o = 0; o < cells; ++o) {
      float s = 0;
      for (int j = 0; j < dims; ++j) s += (cent[c * dims + j] - cent[o * dims + j]) * (cent[c * dims + j] - cent[o * dims + j]);
      d[o] = {o == c ? -1.0f : s, o};
    }
    std::partial_sort(d.begin(), d.begin() + nprobe, d.end());
    for (int p = 0; p < nprobe; ++p) probes[c].push_back(d[p].second);
  }
  // Queries of each cell, contiguous like the members (all members without a subset).
  std::vector<int64_t> qstart = start;
  std::vector<int32_t> qmembers = members;
  if (queries) {
    std::vector<uint8_t> is_query(n, 0);
    for (int32_t q : *queries)
      if (q >= 0 && q < n) is_query[q] = 1;
    qmembers.clear();
    for (int c = 0; c < cells; ++c) {
      qstart[c] = static_cast<int64_t>(qmembers.size());
      for (int64_t i = start[c]; i < start[c + 1]; ++i)
        if (is_query[members[i]]) qmembers.push_back(members[i]);
    }
    qstart[cells] = static_cast<int64_t>(qmembers.size());
  }
  std::vector<Scratch> scratch(std::max(threads, 1));

  ParallelForEach(cells, threads, [&](int64_t cell, int worker) {
    if (qstart[cell] == qstart[cell + 1]) return;  // no queries here
    Scratch& s = scratch[worker];
    s.cand.clear();
    for (int32_t p : probes[cell]) s.cand.insert(s.cand.end(), members.begin() + start[p], members.begin() + start[p + 1]);
    if (s.cand.empty()) return;
    s.cbuf.resize(s.cand.size() * dims);
    s.cnorm.resize(s.cand.size());
    for (size_t j = 0; j < s.cand.size(); ++j) {
      std::copy(z + s.cand[j] * int64_t{dims}, z + (s.cand[j] + 1) * int64_t{dims}, s.cbuf.data() + j * dims);
      s.cnorm[j] = norms[s.cand[j]];
    }
    for (int64_t b = qstart[cell]; b < qstart[cell + 1]; b += kQueryBlock) {
      int64_t mq = std::min(kQueryBlock, qstart[cell + 1] - b);
      SearchBlock(z, dims, qmembers.data() + b, mq, k, s, out.data());
    }
  });
  return out;
}

Neighbours FindNeighbours(const Projection& p, const KnnParams& params, uint64_t seed, int threads,
                          const std::vector<int32_t>* queries, KnnCells* reuse) {
  Neighbours nb;
  nb.k = std::clamp(params.k, 1, kMaxK);
  const int64_t n = p.dims > 0 ? static_cast<int64_t>(p.z.size()) / p.dims : 0;
  nb.idx = ApproxKnn(p.z.data(), n, p.dims, params, seed, threads, queries, reuse);
  return nb;
}

}  // namespace shoal

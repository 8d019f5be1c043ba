// The PowerSGD passes (see powersgd_kernels.h): a portable body per pass and an
// AVX2+FMA one. Both walk M once, row by row; the vector bodies take a tile of a few
// rows at a time, with up to kChunk columns of P in registers (when r is larger, the
// later chunks find the tile's rows in L1).
#include "collectives/compression/powersgd_kernels.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "collectives/compression/codec_common.h"
#include "collectives/compression/simd_common.h"
#include "collectives/dtype.h"

namespace shoal::compression::psgd {
namespace {

// Offset of Q[c][j] in the panels.
inline size_t At(size_t c, int j, int r) { return c / kPanel * kPanel * r + j * kPanel + c % kPanel; }

// ---- portable: the same blocks as the vector path, each as a loop over its kPanel
// lanes that the compiler vectorises for the baseline target (SSE2, NEON). Matters
// where there is no AVX2 path at all, as on ARM.

void AddAndProjectScalar(float* m, const float* residual, size_t rows, size_t cols, const float* q, int r,
                         float* p) {
  std::vector<float> acc(r * kPanel);  // per lane partial sums, as in the vector path
  for (size_t i = 0; i < rows; ++i) {
    float* row = m + i * cols;
    if (residual != nullptr) {
      for (size_t c = 0; c < cols; ++c) row[c] += residual[i * cols + c];
    }
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (size_t c = 0; c < cols; c += kPanel) {
      const size_t n = std::min(kPanel, cols - c);
      const float* qb = q + At(c, 0, r);
      for (int j = 0; j < r; ++j) {
        for (size_t l = 0; l < n; ++l) acc[j * kPanel + l] += row[c + l] * qb[j * kPanel + l];
      }
    }
    for (int j = 0; j < r; ++j) {
      float sum = 0;
      for (size_t l = 0; l < kPanel; ++l) sum += acc[j * kPanel + l];
      p[i * r + j] = sum;
    }
  }
}

void ProjectBackScalar(const float* m, size_t rows, size_t cols, const float* p, int r, float* q) {
  std::fill(q, q + PanelSize(cols, r), 0.0f);
  for (size_t i = 0; i < rows; ++i) {
    const float* row = m + i * cols;
    for (size_t c = 0; c < cols; c += kPanel) {
      const size_t n = std::min(kPanel, cols - c);
      float* qb = q + At(c, 0, r);
      for (int j = 0; j < r; ++j) {
        const float pij = p[i * r + j];
        for (size_t l = 0; l < n; ++l) qb[j * kPanel + l] += pij * row[c + l];
      }
    }
  }
}

void DecodeScalar(float* m, size_t rows, size_t cols, const float* p, int r, const float* sum_q, float share,
                  float* residual) {
  for (size_t i = 0; i < rows; ++i) {
    float* row = m + i * cols;
    float* res = residual + i * cols;
    for (size_t c = 0; c < cols; c += kPanel) {
      const size_t n = std::min(kPanel, cols - c);
      const float* sq = sum_q + At(c, 0, r);
      float s[kPanel] = {};
      for (int j = 0; j < r; ++j) {
        const float pij = p[i * r + j];
        for (size_t k = 0; k < kPanel; ++k) s[k] += pij * sq[j * kPanel + k];
      }
      for (size_t k = 0; k < n; ++k) {
        res[c + k] = FiniteOrZero(row[c + k] - share * s[k]);
        row[c + k] = s[k];
      }
    }
  }
}

// ---- AVX2+FMA

#if defined(__x86_64__) && defined(__GNUC__)
#define SHOAL_PSGD_AVX2 1
// FMA is welcome here (unlike SHOAL_AVX2's kernels): nothing has to match the scalar
// path bit for bit.
#define SHOAL_AVX2_FMA __attribute__((target("avx2,fma")))

// A kernel call covers a tile of a few rows of M and up to kChunk columns of P. Each
// vector of Q read from cache then serves every row of the tile: Q (r floats per
// column of M, 32 KB at r = 4 and 2048 columns) does not fit in L1 beside M's rows,
// and reading it once per row made the L2 the bottleneck, not memory. The sizes keep
// a tile's accumulators in the 16 vector registers.
constexpr int kChunk = 4;
// Rows per tile, per kernel (measured on the benchmark's MLP bucket: one row per tile
// takes 35% longer than these).
constexpr int kProjectRows = 2, kAccumulateRows = 4, kDecodeRows = 2;

// Calls f(i, j0, RB, J) for each tile of rows [i, i + RB) and P's columns
// [j0, j0 + J), RB and J as constants: RB = kRows but for the last rows, one at a time.
template <int kRows, typename F>
void ForTiles(size_t rows, int r, F&& f) {
  for (size_t i = 0; i < rows;) {
    const bool full = rows - i >= kRows;
    for (int j0 = 0; j0 < r; j0 += kChunk) {
      auto chunk = [&](auto J) {
        if (full) f(i, j0, std::integral_constant<int, kRows>{}, J);
        else f(i, j0, std::integral_constant<int, 1>{}, J);
      };
      switch (std::min(kChunk, r - j0)) {
        case 1: chunk(std::integral_constant<int, 1>{}); break;
        case 2: chunk(std::integral_constant<int, 2>{}); break;
        case 3: chunk(std::integral_constant<int, 3>{}); break;
        default: chunk(std::integral_constant<int, 4>{}); break;
      }
    }
    i += full ? kRows : 1;
  }
}

SHOAL_AVX2_FMA inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// The last, partial block of a row goes through masked loads and stores (lanes >= n
// read as 0 and are not written); the panels are padded, so Q needs no mask. Callers
// pass n = kPanel as a constant in their main loops, where this folds to plain moves.
SHOAL_AVX2_FMA inline __m256i LaneMask(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
SHOAL_AVX2_FMA inline __m256 LoadN(const float* x, size_t n) {
  return n == kPanel ? _mm256_loadu_ps(x) : _mm256_maskload_ps(x, LaneMask(n));
}
SHOAL_AVX2_FMA inline void StoreN(float* x, __m256 v, size_t n) {
  if (n == kPanel) _mm256_storeu_ps(x, v);
  else _mm256_maskstore_ps(x, LaneMask(n), v);
}

using simd::FiniteOrZeroX8;

// p_i[j] for the tile's rows i and P's columns j, in lanes: one panel block of n <=
// kPanel columns at m. When res is not null (the first chunk) it is added into m
// first, so that the add costs no pass of its own.
template <int RB, int J>
SHOAL_AVX2_FMA inline void ProjectBlock(float* m, const float* res, size_t cols, size_t n, const float* q,
                                        __m256 (&acc)[RB][J]) {
  __m256 x[RB];
  for (int i = 0; i < RB; ++i) {
    x[i] = LoadN(m + i * cols, n);
    if (res != nullptr) {
      x[i] = _mm256_add_ps(x[i], LoadN(res + i * cols, n));
      StoreN(m + i * cols, x[i], n);
    }
  }
  for (int j = 0; j < J; ++j) {
    const __m256 qj = _mm256_loadu_ps(q + j * kPanel);
    for (int i = 0; i < RB; ++i) acc[i][j] = _mm256_fmadd_ps(x[i], qj, acc[i][j]);
  }
}

template <int RB, int J>
SHOAL_AVX2_FMA void ProjectTile(float* m, const float* res, size_t cols, const float* q, int r, float* p) {
  __m256 acc[RB][J];
  for (int i = 0; i < RB; ++i) {
    for (int j = 0; j < J; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  const size_t block = kPanel * r;
  size_t c = 0;
  for (; c + kPanel <= cols; c += kPanel, q += block) {
    ProjectBlock<RB, J>(m + c, res ? res + c : nullptr, cols, kPanel, q, acc);
  }
  if (c < cols) ProjectBlock<RB, J>(m + c, res ? res + c : nullptr, cols, cols - c, q, acc);
  for (int i = 0; i < RB; ++i) {
    for (int j = 0; j < J; ++j) p[i * r + j] = HSum(acc[i][j]);
  }
}

// Q's columns j += sum over the tile's rows i of p_i[j] * m_i, for one panel block of
// n <= kPanel columns at m.
template <int RB, int J>
SHOAL_AVX2_FMA inline void AccumulateBlock(const float* m, size_t cols, size_t n, const __m256 (&pb)[RB][J],
                                           float* q) {
  __m256 x[RB];
  for (int i = 0; i < RB; ++i) x[i] = LoadN(m + i * cols, n);
  for (int j = 0; j < J; ++j) {
    __m256 a = _mm256_loadu_ps(q + j * kPanel);
    for (int i = 0; i < RB; ++i) a = _mm256_fmadd_ps(x[i], pb[i][j], a);
    _mm256_storeu_ps(q + j * kPanel, a);
  }
}

template <int RB, int J>
SHOAL_AVX2_FMA void AccumulateTile(const float* m, size_t cols, const float* p, int r, float* q) {
  __m256 pb[RB][J];
  for (int i = 0; i < RB; ++i) {
    for (int j = 0; j < J; ++j) pb[i][j] = _mm256_set1_ps(p[i * r + j]);
  }
  const size_t block = kPanel * r;
  size_t c = 0;
  for (; c + kPanel <= cols; c += kPanel, q += block) AccumulateBlock<RB, J>(m + c, cols, kPanel, pb, q);
  if (c < cols) AccumulateBlock<RB, J>(m + c, cols, cols - c, pb, q);
}

// One panel block of n <= kPanel columns at out, for the tile's rows: out += P
// sum_q^T over the chunk's columns of P, and at the last chunk res = M - share * out.
// The first chunk finds M in `out` (the bucket) and, when more chunks follow, parks it
// in res; in between, the rows (in L1) carry the partial sums.
template <int RB, int J>
SHOAL_AVX2_FMA inline void DecodeBlock(float* out, float* res, size_t cols, size_t n, const __m256 (&pb)[RB][J],
                                       const float* sq, __m256 share, bool first, bool last) {
  __m256 m[RB], s[RB];
  for (int i = 0; i < RB; ++i) {
    m[i] = LoadN((first ? out : res) + i * cols, n);
    s[i] = first ? _mm256_setzero_ps() : LoadN(out + i * cols, n);
  }
  for (int j = 0; j < J; ++j) {
    const __m256 sj = _mm256_loadu_ps(sq + j * kPanel);
    for (int i = 0; i < RB; ++i) s[i] = _mm256_fmadd_ps(pb[i][j], sj, s[i]);
  }
  for (int i = 0; i < RB; ++i) {
    StoreN(res + i * cols, last ? FiniteOrZeroX8(_mm256_fnmadd_ps(share, s[i], m[i])) : m[i], n);
    StoreN(out + i * cols, s[i], n);
  }
}

template <int RB, int J>
SHOAL_AVX2_FMA void DecodeTile(float* out, float* res, size_t cols, const float* p, int r, const float* sq,
                               float share, bool first, bool last) {
  __m256 pb[RB][J];
  for (int i = 0; i < RB; ++i) {
    for (int j = 0; j < J; ++j) pb[i][j] = _mm256_set1_ps(p[i * r + j]);
  }
  const __m256 vshare = _mm256_set1_ps(share);
  const size_t block = kPanel * r;
  size_t c = 0;
  for (; c + kPanel <= cols; c += kPanel, sq += block) {
    DecodeBlock<RB, J>(out + c, res + c, cols, kPanel, pb, sq, vshare, first, last);
  }
  if (c < cols) DecodeBlock<RB, J>(out + c, res + c, cols, cols - c, pb, sq, vshare, first, last);
}

void AddAndProjectAvx2(float* m, const float* residual, size_t rows, size_t cols, const float* q, int r,
                       float* p) {
  ForTiles<kProjectRows>(rows, r, [&](size_t i, int j0, auto RB, auto J) {
    const float* res = residual != nullptr && j0 == 0 ? residual + i * cols : nullptr;
    ProjectTile<RB.value, J.value>(m + i * cols, res, cols, q + j0 * kPanel, r, p + i * r + j0);
  });
}

void ProjectBackAvx2(const float* m, size_t rows, size_t cols, const float* p, int r, float* q) {
  std::fill(q, q + PanelSize(cols, r), 0.0f);
  ForTiles<kAccumulateRows>(rows, r, [&](size_t i, int j0, auto RB, auto J) {
    AccumulateTile<RB.value, J.value>(m + i * cols, cols, p + i * r + j0, r, q + j0 * kPanel);
  });
}

void DecodeAvx2(float* m, size_t rows, size_t cols, const float* p, int r, const float* sum_q, float share,
                float* residual) {
  ForTiles<kDecodeRows>(rows, r, [&](size_t i, int j0, auto RB, auto J) {
    DecodeTile<RB.value, J.value>(m + i * cols, residual + i * cols, cols, p + i * r + j0, r, sum_q + j0 * kPanel,
                                  share, j0 == 0, j0 + J.value == r);
  });
}
#endif

}  // namespace

void ToPanels(const float* q, size_t cols, int r, float* panels) {
  std::fill(panels, panels + PanelSize(cols, r), 0.0f);
  for (size_t c = 0; c < cols; ++c) {
    for (int j = 0; j < r; ++j) panels[At(c, j, r)] = q[c * r + j];
  }
}

void FromPanels(const float* panels, size_t cols, int r, float* q) {
  for (size_t c = 0; c < cols; ++c) {
    for (int j = 0; j < r; ++j) q[c * r + j] = panels[At(c, j, r)];
  }
}

bool UseAvx2Fma() {
#ifdef SHOAL_PSGD_AVX2
  static const bool fma = __builtin_cpu_supports("fma");
  return fma && UseAvx2();
#else
  return false;
#endif
}

void AddAndProject(float* m, const float* residual, size_t rows, size_t cols, const float* q, int r,
                   float* p) {
#ifdef SHOAL_PSGD_AVX2
  if (UseAvx2Fma()) return AddAndProjectAvx2(m, residual, rows, cols, q, r, p);
#endif
  AddAndProjectScalar(m, residual, rows, cols, q, r, p);
}

void ProjectBack(const float* m, size_t rows, size_t cols, const float* p, int r, float* q) {
#ifdef SHOAL_PSGD_AVX2
  if (UseAvx2Fma()) return ProjectBackAvx2(m, rows, cols, p, r, q);
#endif
  ProjectBackScalar(m, rows, cols, p, r, q);
}

void Decode(float* m, size_t rows, size_t cols, const float* p, int r, const float* sum_q, float share,
            float* residual) {
#ifdef SHOAL_PSGD_AVX2
  if (UseAvx2Fma()) return DecodeAvx2(m, rows, cols, p, r, sum_q, share, residual);
#endif
  DecodeScalar(m, rows, cols, p, r, sum_q, share, residual);
}

}  // namespace shoal::compression::psgd

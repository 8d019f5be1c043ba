// The projection every statistical filter shares. Either a seeded Gaussian projection,
// or (the default) a randomized PCA: that same Gaussian projection of a sample refined
// by power iterations into the top principal subspace, which keeps far more of the
// neighbourhood structure in 32 dimensions for a few hundred MFLOP more.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "datapipe/blas_guard.h"
#include "datapipe/filters.h"
#include "datapipe/parallel.h"

namespace shoal {

namespace {
// Orthonormalises the columns of a row-major r x c matrix in place (modified
// Gram-Schmidt in double precision; c is small).
void Orthonormalize(float* a, int64_t r, int c) {
  std::vector<double> col(static_cast<size_t>(r) * c);
  for (int64_t i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j) col[j * r + i] = a[i * c + j];
  for (int j = 0; j < c; ++j) {
    double* v = col.data() + j * r;
    for (int k = 0; k < j; ++k) {
      const double* u = col.data() + k * r;
      double dot = 0;
      for (int64_t i = 0; i < r; ++i) dot += u[i] * v[i];
      for (int64_t i = 0; i < r; ++i) v[i] -= dot * u[i];
    }
    double norm = 0;
    for (int64_t i = 0; i < r; ++i) norm += v[i] * v[i];
    norm = std::sqrt(norm);
    // A degenerate direction (constant data) stays zero rather than dividing by 0.
    for (int64_t i = 0; i < r; ++i) v[i] = norm > 1e-12 ? v[i] / norm : 0.0;
  }
  for (int64_t i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j) a[i * c + j] = static_cast<float>(col[j * r + i]);
}

// f x dims orthonormal basis of the top principal subspace of an evenly spread sample
// of rows (randomized range finder, two power iterations).
std::vector<float> PcaBasis(const RecordTable& t, const std::vector<int64_t>& rows, int dims, uint64_t seed,
                            int threads) {
  const int f = t.dim();
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t m = std::min<int64_t>(n, 4000);
  std::vector<float> xs(static_cast<size_t>(m) * f);
  for (int64_t i = 0; i < m; ++i) t.ReadRow(rows[i * n / m], xs.data() + i * f);
  std::vector<double> mean(f, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int j = 0; j < f; ++j) mean[j] += xs[i * f + j];
  for (int64_t i = 0; i < m; ++i)
    for (int j = 0; j < f; ++j) xs[i * f + j] -= static_cast<float>(mean[j] / m);
  std::vector<float> basis(static_cast<size_t>(f) * dims), y(static_cast<size_t>(m) * dims);
  SeededGaussian(seed, basis.data(), basis.size(), 1.0f);
  // Each product is split by sample rows across the workers; X^T Y sums their parts.
  const int parts = std::max(1, std::min<int>(threads, 8));
  std::vector<std::vector<float>> partial(parts, std::vector<float>(static_cast<size_t>(f) * dims));
  for (int it = 0; it < 2; ++it) {
    ParallelChunks(m, parts, [&](int64_t b, int64_t e, int) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(e - b), dims, f, 1.0f, xs.data() + b * f,
                  f, basis.data(), dims, 0.0f, y.data() + b * dims, dims);
    });
    Orthonormalize(y.data(), m, dims);
    ParallelChunks(m, parts, [&](int64_t b, int64_t e, int w) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f, dims, static_cast<int>(e - b), 1.0f, xs.data() + b * f,
                  f, y.data() + b * dims, dims, 0.0f, partial[w].data(), dims);
    });
    for (size_t i = 0; i < basis.size(); ++i) {
      float s = 0;
      for (int w = 0; w < parts; ++w) s += partial[w][i];
      basis[i] = s;
    }
    Orthonormalize(basis.data(), f, dims);
  }
  return basis;
}
}  // namespace

Projection ProjectRows(const RecordTable& t, const std::vector<int64_t>& rows, int dims, uint64_t seed,
                       ProjectionKind kind, int threads) {
  SingleThreadedBlas blas_guard(threads > 1);
  Projection p;
  p.dims = dims;
  const int64_t n = static_cast<int64_t>(rows.size());
  const int f = t.dim();
  p.z.assign(static_cast<size_t>(n) * dims, 0.0f);
  if (n == 0 || dims <= 0) return p;
  std::vector<float> r;
  if (kind == ProjectionKind::kPca && n > dims && f > dims) {
    r = PcaBasis(t, rows, dims, seed, threads);
  } else {
    // Entries N(0, 1/dims): squared distances are preserved in expectation (JL).
    r.resize(static_cast<size_t>(f) * dims);
    SeededGaussian(seed, r.data(), r.size(), 1.0f / std::sqrt(static_cast<float>(dims)));
  }
  // Blocks of rows on our threads, each converting its rows and running its own sgemm.
  constexpr int64_t kBlock = 1024;
  ParallelForEach((n + kBlock - 1) / kBlock, threads, [&](int64_t blk, int) {
    const int64_t b = blk * kBlock, m = std::min(kBlock, n - b);
    std::vector<float> x(static_cast<size_t>(m) * f);
    for (int64_t i = 0; i < m; ++i) t.ReadRow(rows[b + i], x.data() + i * f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), dims, f, 1.0f, x.data(), f,
                r.data(), dims, 0.0f, p.z.data() + b * dims, dims);
  });
  std::vector<double> mean(dims, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < dims; ++d) mean[d] += p.z[i * dims + d];
  for (int d = 0; d < dims; ++d) mean[d] /= static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < dims; ++d) p.z[i * dims + d] -= static_cast<float>(mean[d]);
  p.basis = std::move(r);
  return p;
}

}  // namespace shoal

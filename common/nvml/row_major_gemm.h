// Row-major products on column-major cuBLAS: C = op(A) op(B) in row-major is
// C^T = op(B)^T op(A)^T in column-major, i.e. the same call with A and B swapped and
// m and n swapped. Plain C++ so the mapping is tested on a CPU against a naive gemm.
#pragma once

namespace shoal {

// Arguments of a column-major sgemm (cublasSgemm's order).
struct ColMajorGemm {
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int lda = 0;
  const float* b = nullptr;
  int ldb = 0;
  float* c = nullptr;
  int ldc = 0;
};

// Row-major C (m x n) = op(A) (m x k) * op(B) (k x n), leading dimensions as in cblas
// row-major calls (the row length of each stored matrix).
inline ColMajorGemm FromRowMajor(bool trans_a, bool trans_b, int m, int n, int k, const float* a, int lda,
                                 const float* b, int ldb, float* c, int ldc) {
  return {trans_b, trans_a, n, m, k, b, ldb, a, lda, c, ldc};
}

}  // namespace shoal

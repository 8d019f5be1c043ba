// RowMajorSgemm: the one cuBLAS product call used by the GPU model and codecs, taking
// row-major arguments like cblas_sgemm so their code reads like the CPU twins'.
#pragma once

#include "common/nvml/cuda_check.h"
#include "common/nvml/row_major_gemm.h"

namespace shoal {

// C = alpha * op(A) op(B) + beta * C, all row-major, on the handle's stream.
inline Status RowMajorSgemm(cublasHandle_t h, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  const ColMajorGemm g = FromRowMajor(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc);
  CUBLAS_RETURN_IF_ERROR(cublasSgemm(h, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     g.m, g.n, g.k, &alpha, g.a, g.lda, g.b, g.ldb, &beta, g.c, g.ldc));
  return OkStatus();
}

}  // namespace shoal

// The row-major -> column-major mapping used for every cuBLAS call, checked on a CPU:
// a naive column-major sgemm run on FromRowMajor's arguments must equal a naive
// row-major product, for all four transpose combinations and padded leading dims.
#include "common/nvml/row_major_gemm.h"

#include <vector>

#include <gtest/gtest.h>

namespace shoal {
namespace {

// Reference column-major sgemm: C(m x n) = op(A) op(B), element (i, j) at c[i + j*ldc].
void NaiveColMajor(const ColMajorGemm& g) {
  for (int i = 0; i < g.m; ++i) {
    for (int j = 0; j < g.n; ++j) {
      double s = 0;
      for (int p = 0; p < g.k; ++p) {
        const float av = g.trans_a ? g.a[p + i * g.lda] : g.a[i + p * g.lda];
        const float bv = g.trans_b ? g.b[j + p * g.ldb] : g.b[p + j * g.ldb];
        s += double(av) * bv;
      }
      g.c[i + j * g.ldc] = static_cast<float>(s);
    }
  }
}

class RowMajorGemmTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(RowMajorGemmTest, MatchesRowMajorReference) {
  const auto [ta, tb] = GetParam();
  const int m = 5, n = 3, k = 4, pad = 2;
  // Stored shapes (row-major): A is m x k, or k x m when transposed; same for B.
  const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  const int lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
  std::vector<float> a(a_rows * lda), b(b_rows * ldb), c(m * ldc, -7.0f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(int(i * 7 % 11) - 5);
  for (size_t i = 0; i < b.size(); ++i) b[i] = float(int(i * 5 % 13) - 6);
  NaiveColMajor(FromRowMajor(ta, tb, m, n, k, a.data(), lda, b.data(), ldb, c.data(), ldc));
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double want = 0;
      for (int p = 0; p < k; ++p) {
        const float av = ta ? a[p * lda + i] : a[i * lda + p];
        const float bv = tb ? b[j * ldb + p] : b[p * ldb + j];
        want += double(av) * bv;
      }
      EXPECT_EQ(c[i * ldc + j], float(want)) << "i=" << i << " j=" << j;
    }
    EXPECT_EQ(c[i * ldc + n], -7.0f);  // padding untouched
  }
}

INSTANTIATE_TEST_SUITE_P(AllTransposes, RowMajorGemmTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

}  // namespace
}  // namespace shoal

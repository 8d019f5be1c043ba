// PowerSGD's kernels on both paths (scalar, AVX2+FMA) against a double-precision
// reference, on shapes that reach every edge of the vector path: partial panel blocks
// (cols % 8), leftover rows after the row tiles, and r above one chunk of P's columns.
// And Decode's promise to error feedback: a residual is never inf or NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "collectives/compression/codec_test_util.h"
#include "collectives/compression/powersgd_kernels.h"
#include "collectives/dtype.h"

namespace shoal::compression::psgd {
namespace {

struct Shape {
  size_t rows, cols;
  int r;
};
const std::vector<Shape> kShapes = {{2, 8, 1}, {3, 13, 4}, {5, 17, 5}, {7, 31, 9}, {64, 48, 4}, {9, 100, 2}, {4, 7, 3}};

// A dot product in double, and the bound on f32 rounding for it: a sum of n
// products is off by at most about n * 2^-24 * sum |terms|; 1e-5 relative to the
// terms' magnitude is generous for n <= 100.
struct Ref {
  double value = 0, magnitude = 0;
  void Add(double a, double b) {
    value += a * b;
    magnitude += std::abs(a * b);
  }
  double Tolerance() const { return 1e-5 * magnitude + 1e-30; }
};

std::vector<float> Panels(const std::vector<float>& q, size_t cols, int r) {
  std::vector<float> panels(PanelSize(cols, r));
  ToPanels(q.data(), cols, r, panels.data());
  return panels;
}

// Runs `check` once per path the machine has.
template <typename F>
void OnEachPath(F check) {
  for (bool avx2 : {false, true}) {
    SetAvx2ForTesting(avx2);
    if (avx2 && !UseAvx2Fma()) continue;
    check(avx2 ? "avx2" : "scalar");
  }
  SetAvx2ForTesting(true);
}

TEST(PowerSgdKernelsTest, PanelsRoundTrip) {
  for (const Shape& s : kShapes) {
    const auto q = testing::Gradient(0, s.cols * s.r, 1);
    std::vector<float> back(q.size());
    FromPanels(Panels(q, s.cols, s.r).data(), s.cols, s.r, back.data());
    EXPECT_EQ(back, q);
  }
}

TEST(PowerSgdKernelsTest, AddAndProjectMatchesReference) {
  OnEachPath([](const std::string& path) {
    for (const Shape& s : kShapes) {
      const auto grad = testing::Gradient(0, s.rows * s.cols, 2);
      const auto residual = testing::Gradient(1, s.rows * s.cols, 3);
      const auto q = testing::Gradient(2, s.cols * s.r, 4);
      const auto panels = Panels(q, s.cols, s.r);
      for (bool with_residual : {false, true}) {
        auto m = grad;
        std::vector<float> p(s.rows * s.r);
        AddAndProject(m.data(), with_residual ? residual.data() : nullptr, s.rows, s.cols, panels.data(), s.r,
                      p.data());
        for (size_t i = 0; i < s.rows; ++i) {
          for (size_t c = 0; c < s.cols; ++c) {
            const float x = grad[i * s.cols + c] + (with_residual ? residual[i * s.cols + c] : 0.0f);
            ASSERT_EQ(m[i * s.cols + c], x) << path;
          }
          for (int j = 0; j < s.r; ++j) {
            Ref ref;
            for (size_t c = 0; c < s.cols; ++c) ref.Add(m[i * s.cols + c], q[c * s.r + j]);
            EXPECT_NEAR(p[i * s.r + j], ref.value, ref.Tolerance())
                << path << " " << s.rows << "x" << s.cols << " r=" << s.r << " P[" << i << "][" << j << "]";
          }
        }
      }
    }
  });
}

TEST(PowerSgdKernelsTest, ProjectBackMatchesReference) {
  OnEachPath([](const std::string& path) {
    for (const Shape& s : kShapes) {
      const auto m = testing::Gradient(0, s.rows * s.cols, 5);
      const auto p = testing::Gradient(1, s.rows * s.r, 6);
      std::vector<float> panels(PanelSize(s.cols, s.r), std::nanf("")), q(s.cols * s.r);
      ProjectBack(m.data(), s.rows, s.cols, p.data(), s.r, panels.data());
      FromPanels(panels.data(), s.cols, s.r, q.data());
      for (size_t c = 0; c < s.cols; ++c) {
        for (int j = 0; j < s.r; ++j) {
          Ref ref;
          for (size_t i = 0; i < s.rows; ++i) ref.Add(m[i * s.cols + c], p[i * s.r + j]);
          EXPECT_NEAR(q[c * s.r + j], ref.value, ref.Tolerance())
              << path << " " << s.rows << "x" << s.cols << " r=" << s.r << " Q[" << c << "][" << j << "]";
        }
      }
    }
  });
}

TEST(PowerSgdKernelsTest, DecodeMatchesReferenceAndZeroesNonFiniteResiduals) {
  const float inf = std::numeric_limits<float>::infinity();
  OnEachPath([&](const std::string& path) {
    for (const Shape& s : kShapes) {
      auto input = testing::Gradient(0, s.rows * s.cols, 7);
      // Non-finite inputs, in a full block and in the last, partial one.
      input[0] = std::nanf("");
      input[s.rows * s.cols - 1] = -inf;
      if (s.cols > 9) input[9] = inf;
      const auto p = testing::Gradient(1, s.rows * s.r, 8);
      const auto sq = testing::Gradient(3, s.cols * s.r, 10);
      for (const float share : {1.0f, 0.25f, 1.0f / 3}) {
        auto out = input;
        std::vector<float> residual(input.size(), std::nanf(""));
        Decode(out.data(), s.rows, s.cols, p.data(), s.r, Panels(sq, s.cols, s.r).data(), share, residual.data());
        for (size_t i = 0; i < s.rows; ++i) {
          for (size_t c = 0; c < s.cols; ++c) {
            Ref sum;
            for (int j = 0; j < s.r; ++j) sum.Add(p[i * s.r + j], sq[c * s.r + j]);
            const size_t k = i * s.cols + c;
            const std::string where = path + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols) +
                                      " r=" + std::to_string(s.r) + " share " + std::to_string(share) +
                                      " element " + std::to_string(k);
            EXPECT_NEAR(out[k], sum.value, sum.Tolerance()) << where;
            if (std::isfinite(input[k])) {
              // input - share * sum: the input's own rounding is part of the bound.
              EXPECT_NEAR(residual[k], input[k] - share * sum.value,
                          share * sum.Tolerance() + 1e-6 * (std::abs(input[k]) + share * sum.magnitude))
                  << where;
            } else {
              EXPECT_EQ(residual[k], 0.0f) << where;
            }
          }
        }
      }
    }
  });
}

}  // namespace
}  // namespace shoal::compression::psgd

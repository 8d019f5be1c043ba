// The three passes of the CPU PowerSGD codec over one matrix M (rows x cols,
// row-major) with rank-r factors P (rows x r, row-major) and Q (cols x r) held as
// panels: Q's rows in blocks of kPanel, each block stored column by column, padded
// with zeros to a whole block. For every kPanel columns of an M row a kernel then
// reads the r matching vectors of Q from one contiguous run: unit stride, and none of
// the cache-set conflicts that r rows of a transposed Q, a power of two apart, give.
// These products are skinny (r is small), so they are bound by memory traffic: each
// kernel is one pass over M, the factors staying in cache.
//
// Each kernel takes an AVX2+FMA path where the CPU has it (and UseAvx2() allows it,
// collectives/dtype.h) and otherwise a portable scalar one. The two sum in different
// orders, so they agree to f32 rounding, not bit for bit.
#pragma once

#include <cstddef>

namespace shoal::compression::psgd {

// Columns of M per panel block: one AVX vector of floats.
constexpr size_t kPanel = 8;

// Floats in the panels of a cols x r factor; Q[c][j] is at
// (c / kPanel) * kPanel * r + j * kPanel + c % kPanel.
inline size_t PanelSize(size_t cols, int r) { return (cols + kPanel - 1) / kPanel * kPanel * r; }
// q (cols x r, row-major: the wire and state layout) to panels, and back.
void ToPanels(const float* q, size_t cols, int r, float* panels);
void FromPanels(const float* panels, size_t cols, int r, float* q);

// All Q arguments are panels (PanelSize floats).
//
// Pass A: m += residual (skipped when residual is null), then P = m Q.
void AddAndProject(float* m, const float* residual, size_t rows, size_t cols, const float* q, int r,
                   float* p);

// Pass B: Q = m^T P.
void ProjectBack(const float* m, size_t rows, size_t cols, const float* p, int r, float* q);

// Pass C: m = P sum_q^T (the decoded output, in place) and residual =
// FiniteOrZero(m_before - share * output): error feedback of what this rank's share
// of the output (share = 1 / world size) did not carry, never inf or NaN.
void Decode(float* m, size_t rows, size_t cols, const float* p, int r, const float* sum_q, float share,
            float* residual);

// The kernels' path: true where they take AVX2+FMA.
bool UseAvx2Fma();

}  // namespace shoal::compression::psgd

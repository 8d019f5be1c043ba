// Near duplicates with conflicting labels, including copies that were shifted, cropped
// and resized, noised, or had their brightness and contrast changed. Candidates are each
// record's nearest neighbours in a descriptor that undoes those changes roughly (the
// image resampled around its centre of mass at the scale of its spread, normalised to
// zero mean and unit norm); the verdict is the pixel residual after the best alignment
// and gain/offset fit (image_align.h), so the cheap stage may over-include but the
// verdict is tight.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "datapipe/filters.h"
#include "datapipe/image_align.h"
#include "datapipe/parallel.h"

namespace shoal {

namespace {
constexpr int kGrid = 12;         // descriptor: 12 x 12 samples of an image
constexpr int kProjectDims = 16;  // neighbours are searched in a PCA of the descriptors
// Each image is described four ways: centred on its centre of mass (a shifted copy
// finds its source there), and centred on the frame as it is and magnified 1.15 and 1.3
// times (a copy cropped about the centre and resized back, magnified 1.17 by 2 pixels
// off each side of 28 and 1.27 by 3, finds its source there; a few percent of zoom or a
// pixel off-centre costs little after the blur).
constexpr float kZooms[] = {1.0f, 1.0f, 1.15f, 1.3f};
constexpr bool kCentredOnFrame[] = {false, true, true, true};
constexpr int kVariants = 4;
// Candidates farther apart than this in the projected descriptors (unit vectors: squared
// distance up to 2 - 2 cos) are not aligned.
constexpr float kMaxDescriptorD2 = 0.3f;

std::string Fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

bool IsImage(const RecordTable& t) { return t.height > 1 && t.width > 1 && t.height * t.width == t.dim(); }
}  // namespace

std::vector<Flag> NearDuplicateFilter(const RecordTable& t, const std::vector<int64_t>& rows,
                                      const NearDuplicateParams& params, uint64_t seed, int threads,
                                      NearDuplicateStats* stats) {
  const int64_t n = static_cast<int64_t>(rows.size());
  if (n < 2 || t.dim() <= 0) return {};
  const bool image = IsImage(t);
  const int h = image ? t.height : 1, w = image ? t.width : t.dim();
  const int dd = image ? kGrid * kGrid : t.dim();

  // Moments of every row; a PCA basis of the plain descriptors of a sample.
  std::vector<ImageMoments> mom(n);
  const int variants = image ? kVariants : 1;
  // x: the row; scratch: room for its blurred copy.
  auto describe = [&](const float* x, int64_t i, float* scratch, int v, float* d) {
    if (image) {
      if (v == 0) BoxBlur3(x, h, w, scratch);
      const bool frame = kCentredOnFrame[v] || mom[i].flat;
      ImageDescriptor(scratch, h, w, frame ? 0.5f * (h - 1) : mom[i].cy, frame ? 0.5f * (w - 1) : mom[i].cx, kZooms[v],
                      kGrid, d);
      return;
    }
    double s = 0, ss = 0;  // no geometry: the features themselves, without gain and offset
    for (int j = 0; j < dd; ++j) s += x[j];
    const float mean = static_cast<float>(s / dd);
    for (int j = 0; j < dd; ++j) d[j] = x[j] - mean, ss += double(d[j]) * d[j];
    const float inv = ss > 1e-12 ? static_cast<float>(1 / std::sqrt(ss)) : 0.0f;
    for (int j = 0; j < dd; ++j) d[j] *= inv;
  };
  ParallelChunks(n, threads, [&](int64_t b, int64_t e, int) {
    std::vector<float> x(t.dim());
    for (int64_t i = b; i < e; ++i) {
      t.ReadRow(rows[i], x.data());
      if (image) mom[i] = ComputeMoments(x.data(), h, w);
    }
  });
  const int dims = std::min(kProjectDims, dd);
  std::vector<float> basis;  // dd x dims; empty: descriptors are used as they are
  if (dd > kProjectDims) {
    const int64_t m = std::min<int64_t>(n, 4000);
    std::vector<float> sample(static_cast<size_t>(m) * dd), x(t.dim()), blur(t.dim());
    std::vector<int32_t> sl(m, 0);
    std::vector<int64_t> sr(m);
    for (int64_t k = 0; k < m; ++k) {
      const int64_t i = k * n / m;
      t.ReadRow(rows[i], x.data());
      describe(x.data(), i, blur.data(), 0, sample.data() + k * dd);
      sr[k] = k;
    }
    RecordTable st = TableFromArrays(sample.data(), sl.data(), m, dd, 1);
    basis = ProjectRows(st, sr, dims, seed ^ 0x4EA2D0ull, ProjectionKind::kPca, 1).basis;
  }
  // Every description of every row, projected: point v * n + i is row i at kZooms[v].
  Projection proj;
  proj.dims = dims;
  proj.z.assign(static_cast<size_t>(variants) * n * dims, 0.0f);
  constexpr int64_t kBlock = 256;
  ParallelForEach((n + kBlock - 1) / kBlock, threads, [&](int64_t blk, int) {
    const int64_t b = blk * kBlock, e = std::min(n, b + kBlock);
    std::vector<float> x(t.dim()), blur(t.dim()), d(static_cast<size_t>(variants) * kBlock * dd);
    for (int64_t i = b; i < e; ++i) {
      t.ReadRow(rows[i], x.data());
      for (int v = 0; v < variants; ++v) describe(x.data(), i, blur.data(), v, d.data() + (v * kBlock + i - b) * dd);
    }
    for (int v = 0; v < variants; ++v) {
      float* z = proj.z.data() + (static_cast<int64_t>(v) * n + b) * dims;
      const float* dv = d.data() + static_cast<size_t>(v) * kBlock * dd;
      if (basis.empty()) {
        std::copy(dv, dv + (e - b) * dd, z);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(e - b), dims, dd, 1.0f, dv, dd,
                    basis.data(), dims, 0.0f, z, dims);
      }
    }
  });

  // Nearest neighbours among all descriptions; pairs of rows with different labels.
  // Description v of row i near description u of row j: j looks like i magnified
  // kZooms[v] / kZooms[u], which seeds the alignment's scale.
  // Two searches: the centre-of-mass descriptions among themselves (shifts, noise,
  // brightness), and the frame-centred ones, keeping only pairs whose zooms differ
  // (crops; same-zoom pairs there repeat the first search's).
  KnnParams kp;
  kp.k = std::clamp(params.neighbours, 1, 32);
  struct Candidate {
    int32_t i, j;  // i < j
    float d2, s;   // projected distance; scale hint predicting j from i
  };
  std::vector<Candidate> cand;
  for (int family = 0; family < (variants > 1 ? 2 : 1); ++family) {
    const int v0 = family == 0 ? 0 : 1, nv = family == 0 ? 1 : variants - 1;
    Projection fp;
    fp.dims = dims;
    fp.z.assign(proj.z.begin() + static_cast<int64_t>(v0) * n * dims,
                proj.z.begin() + static_cast<int64_t>(v0 + nv) * n * dims);
    Neighbours nb = FindNeighbours(fp, kp, seed ^ (0x4EA2D1ull + family), threads);
    const int64_t points = static_cast<int64_t>(nv) * n;
    for (int64_t p = 0; p < points; ++p)
      for (int r = 0; r < nb.k; ++r) {
        const int32_t q = nb.of(p)[r];
        if (q < 0) continue;
        int32_t i = static_cast<int32_t>(p % n), j = static_cast<int32_t>(q % n);
        const int vp = v0 + static_cast<int>(p / n), vq = v0 + static_cast<int>(q / n);
        if (i == j || t.labels[rows[i]] == t.labels[rows[j]] || (family == 1 && vp == vq)) continue;
        const float* a = fp.row(p);
        const float* b = fp.row(q);
        float d2 = 0;
        for (int c = 0; c < dims; ++c) d2 += (a[c] - b[c]) * (a[c] - b[c]);
        if (d2 > kMaxDescriptorD2) continue;
        float s = kZooms[vq] / kZooms[vp];
        if (i > j) std::swap(i, j), s = 1 / s;
        cand.push_back({i, j, d2, s});
      }
  }
  std::sort(cand.begin(), cand.end(), [](const Candidate& a, const Candidate& b) {
    return a.i != b.i ? a.i < b.i : a.j != b.j ? a.j < b.j : a.d2 < b.d2;
  });
  // One alignment per pair, seeded by its closest descriptions.
  cand.erase(std::unique(cand.begin(), cand.end(),
                         [](const Candidate& a, const Candidate& b) { return a.i == b.i && a.j == b.j; }),
             cand.end());
  std::vector<std::pair<int32_t, int32_t>> pairs;
  for (const auto& c : cand) pairs.emplace_back(c.i, c.j);

  // Verdicts: the wider image (smaller spread) predicts the other, so a zoomed-in copy
  // maps wholly inside its source.
  std::vector<Alignment> verdict(pairs.size());
  std::vector<uint8_t> identical(pairs.size(), 0);
  AlignParams ap;
  ap.vmin = static_cast<float>(t.value_min), ap.vmax = static_cast<float>(t.value_max);
  ap.geometry = image;
  ap.give_up = 2.0 * params.max_rms;
  ap.first_give_up = 2.25 * params.max_rms;
  ParallelForEach((static_cast<int64_t>(pairs.size()) + 63) / 64, threads, [&](int64_t blk, int) {
    std::vector<float> xa(t.dim()), xb(t.dim());
    const int64_t end = std::min<int64_t>(static_cast<int64_t>(pairs.size()), (blk + 1) * 64);
    for (int64_t k = blk * 64; k < end; ++k) {
      int32_t i = pairs[k].first, j = pairs[k].second;
      if (std::memcmp(t.features[rows[i]], t.features[rows[j]], t.layout.feature_bytes()) == 0) {
        identical[k] = 1;
        verdict[k].rms = 0;
        continue;
      }
      // The one magnified less predicts the other, so the other maps wholly inside it.
      AlignParams pp = ap;
      pp.scale_hint = cand[k].s;
      if (pp.scale_hint > 1) std::swap(i, j), pp.scale_hint = 1 / pp.scale_hint;
      t.ReadRow(rows[i], xa.data());
      t.ReadRow(rows[j], xb.data());
      verdict[k] = AlignImages(xa.data(), mom[i], xb.data(), mom[j], h, w, pp);
    }
  });
  if (stats) stats->descriptor_pairs = static_cast<int64_t>(pairs.size());

  // Each row keeps its closest conflicting partner.
  std::vector<double> best(n, INFINITY);
  std::vector<int64_t> partner(n, -1);
  for (size_t k = 0; k < pairs.size(); ++k) {
    const double rms = verdict[k].rms;
    if (rms > params.max_rms || (!identical[k] && verdict[k].relative > params.max_relative) ||
        (params.skip_identical && identical[k]))
      continue;
    if (stats) ++stats->matched_pairs;
    auto [a, c] = pairs[k];
    if (rms < best[a] || (rms == best[a] && c < partner[a])) best[a] = rms, partner[a] = static_cast<int64_t>(k);
    if (rms < best[c] || (rms == best[c] && a < partner[c])) best[c] = rms, partner[c] = static_cast<int64_t>(k);
  }
  std::vector<Flag> out;
  for (int64_t i = 0; i < n; ++i) {
    if (partner[i] < 0) continue;
    const auto& pr = pairs[partner[i]];
    const Alignment& al = verdict[partner[i]];
    const int64_t other = rows[pr.first == i ? pr.second : pr.first];
    std::string how = identical[partner[i]] ? "identical" : "rms " + Fixed(best[i], 4) + " <= " + Fixed(params.max_rms, 4);
    if (image && !identical[partner[i]])
      how += " after scale " + Fixed(al.scale, 3) + ", offset (" + Fixed(al.dy, 2) + ", " + Fixed(al.dx, 2) +
             ") px, gain " + Fixed(al.gain, 2) + " and offset " + Fixed(al.offset, 3);
    out.push_back({rows[i], best[i],
                   "near duplicate (" + how + ") of record " + std::to_string(t.ids[other]) + " labelled " +
                       std::to_string(t.labels[other])});
  }
  return out;
}

}  // namespace shoal

// Near duplicates with conflicting labels, including copies that were shifted, cropped
// and resized, noised, or had their brightness and contrast changed (version 3).
// Candidates: each image has one base description (12 x 12 samples of the blurred image,
// zero mean, unit norm, in a 16-dim PCA) that a copy changed in brightness, contrast or
// noise, or shifted without losing content, shares; and "probe" descriptions of the image
// as a shifted or cropped copy of it would look where a base description cannot follow
// (below). Base descriptions are searched among themselves (ApproxKnn) and probes among
// the base ones only (SearchProbes). The verdict is the pixel residual after the best
// alignment and gain/offset fit (image_align.h), started from where the two matching
// descriptions were centred, so the cheap stage may over-include but the verdict is tight.
#include <cblas.h>

#include <algorithm>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
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
// The base description of an image samples its central side - 2 kMaxShift pixels,
// centred per axis on the frame where the content fills that axis (extent >= side -
// kFillSlack, as most Fashion-MNIST items do along their long side) and on the centre of
// mass elsewhere. A shift of up to kMaxShift pixels along an unfilled axis moves the
// content and its centre of mass together; along a filled one it cuts content off at
// the border and moves the centre of mass by less than the shift, so there the image is
// also described with its window moved by 1 and 2 pixels (the "shift probes"; along
// both axes when it fills both). Both records of a pair probe the same direction, so
// one of them sees the other's base window exactly, clear of the rows the shift cut.
constexpr int kMaxShift = 2;
constexpr int kFillSlack = 3;
// Crop 2 or 3 pixels off every side and resize back: magnified side / (side - 2 m).
// "Zoom probes": the frame-centred (or centre-of-mass-centred, for an axis even the
// magnified content would not fill) description at those magnifications finds the copy.
constexpr int kCropMargins[] = {2, 3};
// Base views farther apart than this in the projection (of unit vectors: squared distance
// up to 2 - 2 cos) are not aligned; the benchmark's true copies measure under 0.06.
constexpr float kMaxDescriptorD2 = 0.15f;
// k-means cells searched per base view and per shift and zoom probe: a true copy's
// description lies next to its source's (a cropped one's a little less close: the
// crop's resampling blurs it).
constexpr int kBaseProbe = 4;
constexpr int kProbeCells[2] = {3, 5};
// A probe matches its copy almost exactly (an exact shift, the exact magnification):
// only its nearest base view within this distance is a candidate.
constexpr int kProbeNeighbours = 1;
constexpr float kProbeMaxD2 = 0.06f;

std::string Fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

bool IsImage(const RecordTable& t) { return t.height > 1 && t.width > 1 && t.height * t.width == t.dim(); }

// One description of one row: where its grid is centred, its step, and the scale that
// predicts a row matching it from this one (1 / magnification).
struct View {
  float cy, cx, step, scale;
};
std::vector<View> Views(const ImageMoments& m, int h, int w) {
  const int side = std::max(h, w);  // (tiny images: the window never shrinks below half)
  const float step = static_cast<float>(std::max(side - 2 * kMaxShift, (side + 1) / 2)) / kGrid;
  const float fy = 0.5f * (h - 1), fx = 0.5f * (w - 1);
  auto filled = [&](float extent, int len) { return !m.flat && extent >= len - kFillSlack; };
  const bool ry = filled(m.extent_y, h), rx = filled(m.extent_x, w);
  const float by = ry || m.flat ? fy : m.cy, bx = rx || m.flat ? fx : m.cx;
  std::vector<View> v = {{by, bx, step, 1.0f}};
  if (m.flat) return v;
  // Shift probes: a half-plane of moves, so (a, b) and (-a, -b) are not both described.
  for (int a = 0; a <= kMaxShift; ++a)
    for (int b = -kMaxShift; b <= kMaxShift; ++b) {
      if ((a == 0 && b <= 0) || (a != 0 && !ry) || (b != 0 && !rx)) continue;
      v.push_back({by + a, bx + b, step, 1.0f});
    }
  // The copy's extent is about z times this one's plus half a pixel of resampling blur;
  // within a pixel of the threshold either centring may be the copy's, so both are probed.
  for (int margin : kCropMargins) {
    if (4 * margin > side) continue;
    const float z = static_cast<float>(side) / (side - 2 * margin);
    auto centres = [&](int extent, int len, float frame, float com) {
      const float e = z * extent + 0.5f, cut = static_cast<float>(len - kFillSlack);
      if (e >= cut + 1) return std::vector<float>{frame};
      if (e < cut - 1) return std::vector<float>{com};
      return std::vector<float>{frame, com};
    };
    for (float cy : centres(m.extent_y, h, fy, m.cy))
      for (float cx : centres(m.extent_x, w, fx, m.cx)) v.push_back({cy, cx, step / z, 1 / z});
  }
  return v;
}

// The smallest of x[0..n), n > 0: eight independent running minima (a single one is a
// chain of dependent compares, slower than everything else done to an image here).
float MinValue(const float* x, int n) {
  float m[8];
  std::fill(m, m + 8, x[0]);
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) m[l] = std::min(m[l], x[j + l]);
  for (; j < n; ++j) m[0] = std::min(m[0], x[j]);
  return *std::min_element(m, m + 8);
}

struct TopK {
  int k = 1, size = 0;
  float d[32];
  int32_t idx[32];
  void Push(float dist, int32_t i) {
    if (size == k && dist >= d[k - 1]) return;
    int p = size < k ? size++ : k - 1;
    while (p > 0 && d[p - 1] > dist) d[p] = d[p - 1], idx[p] = idx[p - 1], --p;
    d[p] = dist, idx[p] = i;
  }
};

// The k nearest base points (z rows 0..n) within max_d2 of every probe point (z rows
// n..), never another probe nor the probe's own row: the base points' k-means cells
// (from their own search) are the index, and each probe searches its own cell and the
// ones whose centroids are nearest to it, nprobe[wide[probe]] cells in all. (ApproxKnn
// would make the probes candidates too, and cost as many points again.)
std::vector<int32_t> SearchProbes(const std::vector<float>& z, int64_t n, int dims, const std::vector<int32_t>& owner,
                                  const std::vector<uint8_t>& wide, const KnnCells& cells, int k, const int nprobe[2],
                                  float max_d2, int threads) {
  const int64_t m = static_cast<int64_t>(owner.size()) - n;
  std::vector<int32_t> out(static_cast<size_t>(m) * k, -1);
  const int nc = std::max<int>(1, static_cast<int>(cells.centroids.size() / dims));
  std::vector<int32_t> base_cell = cells.cell_of, probe_cell(m, 0);
  if (cells.centroids.empty()) base_cell.assign(n, 0);
  auto norm2 = [&](const float* a) {
    float s = 0;
    for (int d = 0; d < dims; ++d) s += a[d] * a[d];
    return s;
  };
  std::vector<float> cn(nc);
  for (int c = 0; c < nc && !cells.centroids.empty(); ++c) cn[c] = norm2(cells.centroids.data() + c * dims);
  constexpr int64_t kBlock = 256;
  if (nc > 1)
    ParallelForEach((m + kBlock - 1) / kBlock, threads, [&](int64_t blk, int) {
      const int64_t b = blk * kBlock, e = std::min(m, b + kBlock);
      std::vector<float> dot(static_cast<size_t>(e - b) * nc);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(e - b), nc, dims, 1.0f,
                  z.data() + (n + b) * dims, dims, cells.centroids.data(), dims, 0.0f, dot.data(), nc);
      std::vector<float> d(nc);
      for (int64_t i = b; i < e; ++i) {
        const float* row = dot.data() + (i - b) * nc;
        for (int c = 0; c < nc; ++c) d[c] = cn[c] - 2 * row[c];
        probe_cell[i] = static_cast<int32_t>(std::find(d.begin(), d.end(), MinValue(d.data(), nc)) - d.begin());
      }
    });
  // Members and probes of each cell, contiguous (counting sort).
  auto bucket = [&](const std::vector<int32_t>& cell_of, std::vector<int64_t>* start, std::vector<int32_t>* items) {
    start->assign(nc + 1, 0);
    for (int32_t c : cell_of) ++(*start)[c + 1];
    for (int c = 0; c < nc; ++c) (*start)[c + 1] += (*start)[c];
    items->resize(cell_of.size());
    std::vector<int64_t> fill(start->begin(), start->end() - 1);
    for (size_t i = 0; i < cell_of.size(); ++i) (*items)[fill[cell_of[i]]++] = static_cast<int32_t>(i);
  };
  std::vector<int64_t> bstart, pstart;
  std::vector<int32_t> bitems, pitems;
  bucket(base_cell, &bstart, &bitems);
  bucket(probe_cell, &pstart, &pitems);
  // In each cell the wide probes first: the narrow ones search a prefix of their candidates.
  for (int c = 0; c < nc; ++c)
    std::stable_partition(pitems.begin() + pstart[c], pitems.begin() + pstart[c + 1],
                          [&](int32_t q) { return wide[q] != 0; });
  std::vector<float> bn(n);
  for (int64_t i = 0; i < n; ++i) bn[i] = norm2(z.data() + i * dims);
  ParallelForEach(nc, threads, [&](int64_t cell, int) {
    if (pstart[cell] == pstart[cell + 1]) return;
    // This cell and those whose centroids are nearest to it, nearest first.
    std::vector<int32_t> cand;
    int64_t narrow = 0;  // candidates of a narrow probe
    std::vector<std::pair<float, int32_t>> near(nc);
    const float* cc = cells.centroids.data() + cell * dims;
    for (int o = 0; o < nc; ++o) {
      float s = 0;
      for (int d = 0; d < dims && nc > 1; ++d) s += (cc[d] - cells.centroids[o * dims + d]) * (cc[d] - cells.centroids[o * dims + d]);
      near[o] = {o == cell ? -1.0f : s, o};
    }
    const int np = std::min(std::max(nprobe[0], nprobe[1]), nc);
    std::partial_sort(near.begin(), near.begin() + np, near.end());
    for (int p = 0; p < np; ++p) {
      if (p == std::min(nprobe[0], nc)) narrow = static_cast<int64_t>(cand.size());
      cand.insert(cand.end(), bitems.begin() + bstart[near[p].second], bitems.begin() + bstart[near[p].second + 1]);
    }
    if (np == std::min(nprobe[0], nc)) narrow = static_cast<int64_t>(cand.size());
    if (cand.empty()) return;
    std::vector<float> cbuf(cand.size() * dims), qbuf, dot;
    std::vector<float> cn_cand(cand.size());
    for (size_t j = 0; j < cand.size(); ++j) {
      std::copy(z.data() + cand[j] * int64_t{dims}, z.data() + (cand[j] + 1) * int64_t{dims}, cbuf.data() + j * dims);
      cn_cand[j] = bn[cand[j]];
    }
    // 64 probes of one kind at a time: their distances to the candidates stay in cache.
    for (int64_t b = pstart[cell], e; b < pstart[cell + 1]; b = e) {
      const bool is_wide = wide[pitems[b]] != 0;
      e = b + 1;
      while (e < pstart[cell + 1] && e - b < 64 && (wide[pitems[e]] != 0) == is_wide) ++e;
      const int64_t mq = e - b, mc = is_wide ? static_cast<int64_t>(cand.size()) : narrow;
      if (mc == 0) continue;
      qbuf.resize(static_cast<size_t>(mq) * dims);
      for (int64_t i = 0; i < mq; ++i)
        std::copy(z.data() + (n + pitems[b + i]) * dims, z.data() + (n + pitems[b + i] + 1) * dims, qbuf.data() + i * dims);
      dot.resize(static_cast<size_t>(mq) * mc);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(mq), static_cast<int>(mc), dims, 1.0f,
                  qbuf.data(), dims, cbuf.data(), dims, 0.0f, dot.data(), static_cast<int>(mc));
      for (int64_t i = 0; i < mq; ++i) {
        const int32_t q = pitems[b + i], self = owner[n + q];
        TopK top;
        top.k = k;
        const float* row = dot.data() + i * mc;
        // d2 = |q|^2 + |c|^2 - 2 q.c; only those within max_d2 are kept, and few are.
        const float* qv = z.data() + (n + q) * dims;
        float worst = max_d2 - norm2(qv);
        auto consider = [&](int64_t j) {
          const float d = cn_cand[j] - 2 * row[j];
          if (d > worst || cand[j] == self) return;
          top.Push(d, cand[j]);
          if (top.size == k) worst = std::min(worst, top.d[k - 1]);
        };
        int64_t j = 0;
#if defined(__SSE2__)
        // 8 candidates at a time: almost none is within max_d2, so most blocks are
        // skipped after one compare.
        const __m128 two = _mm_set1_ps(2.0f);
        for (; j + 8 <= mc; j += 8) {
          const __m128 d0 = _mm_sub_ps(_mm_loadu_ps(cn_cand.data() + j), _mm_mul_ps(two, _mm_loadu_ps(row + j)));
          const __m128 d1 = _mm_sub_ps(_mm_loadu_ps(cn_cand.data() + j + 4), _mm_mul_ps(two, _mm_loadu_ps(row + j + 4)));
          if (_mm_movemask_ps(_mm_cmple_ps(_mm_min_ps(d0, d1), _mm_set1_ps(worst))) == 0) continue;
          for (int l = 0; l < 8; ++l) consider(j + l);
        }
#endif
        for (; j < mc; ++j) consider(j);
        for (int r = 0; r < top.size; ++r) out[static_cast<size_t>(q) * k + r] = top.idx[r];
      }
    }
  });
  return out;
}
}  // namespace

std::vector<Flag> NearDuplicateFilter(const RecordTable& t, const std::vector<int64_t>& rows,
                                      const NearDuplicateParams& params, uint64_t seed, int threads,
                                      NearDuplicateStats* stats) {
  const int64_t n = static_cast<int64_t>(rows.size());
  if (n < 2 || t.dim() <= 0) return {};
  const bool image = IsImage(t);
  const int h = image ? t.height : 1, w = image ? t.width : t.dim();
  const int dd = image ? kGrid * kGrid : t.dim();

  // Row i's views, described (d: room for one descriptor per view); the base view's
  // alone with base_only. No geometry: the features themselves, without gain and offset.
  std::vector<ImageMoments> mom(n);
  auto describe = [&](const float* x, int64_t i, bool base_only, float* blur, std::vector<View>* views,
                      std::vector<float>* d) {
    if (!image) {
      d->resize(dd);
      double s = 0, ss = 0;
      for (int j = 0; j < dd; ++j) s += x[j];
      const float mean = static_cast<float>(s / dd);
      for (int j = 0; j < dd; ++j) (*d)[j] = x[j] - mean, ss += double((*d)[j]) * (*d)[j];
      const float inv = ss > 1e-12 ? static_cast<float>(1 / std::sqrt(ss)) : 0.0f;
      for (int j = 0; j < dd; ++j) (*d)[j] *= inv;
      views->assign(1, View{0, 0, 1, 1});
      return;
    }
    mom[i] = ComputeMoments(x, h, w);
    *views = Views(mom[i], h, w);
    if (base_only) views->resize(1);
    d->resize(views->size() * dd);
    BoxBlur3(x, h, w, blur);
    const float lo = MinValue(blur, h * w);
    for (size_t v = 0; v < views->size(); ++v) {
      const View& vw = (*views)[v];
      ImageDescriptor(blur, h, w, lo, vw.cy, vw.cx, vw.step, kGrid, d->data() + v * dd);
    }
  };
  // A PCA basis of the base descriptors of a sample.
  const int dims = std::min(kProjectDims, dd);
  std::vector<float> basis;  // dd x dims; empty: descriptors are used as they are
  if (dd > kProjectDims) {
    const int64_t m = std::min<int64_t>(n, 4000);
    std::vector<float> sample(static_cast<size_t>(m) * dd), x(t.dim()), blur(t.dim()), d;
    std::vector<View> views;
    std::vector<int32_t> sl(m, 0);
    std::vector<int64_t> sr(m);
    for (int64_t k = 0; k < m; ++k) {
      const int64_t i = k * n / m;
      t.ReadRow(rows[i], x.data());
      describe(x.data(), i, true, blur.data(), &views, &d);
      std::copy(d.begin(), d.begin() + dd, sample.data() + k * dd);
      sr[k] = k;
    }
    RecordTable st = TableFromArrays(sample.data(), sl.data(), m, dd, 1);
    basis = ProjectRows(st, sr, dims, seed ^ 0x4EA2D0ull, ProjectionKind::kPca, 1).basis;
  }
  // Every view of every row, projected, in one pass over blocks of rows: point i is row
  // i's base view; each block's probes are gathered after it, points n.. in row order.
  constexpr int64_t kBlock = 256;
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  std::vector<float> z(static_cast<size_t>(n) * dims);
  std::vector<View> view(n);
  struct Probes {
    std::vector<float> z;
    std::vector<View> view;
    std::vector<int32_t> owner;
  };
  std::vector<Probes> block_probes(nblocks);
  ParallelForEach(nblocks, threads, [&](int64_t blk, int) {
    const int64_t b = blk * kBlock, e = std::min(n, b + kBlock);
    Probes& pr = block_probes[blk];
    std::vector<float> x(t.dim()), blur(t.dim()), d, base(static_cast<size_t>(e - b) * dd), probe;
    std::vector<View> views;
    for (int64_t i = b; i < e; ++i) {
      t.ReadRow(rows[i], x.data());
      describe(x.data(), i, false, blur.data(), &views, &d);
      view[i] = views[0];
      std::copy(d.begin(), d.begin() + dd, base.data() + (i - b) * dd);
      probe.insert(probe.end(), d.begin() + dd, d.end());
      pr.view.insert(pr.view.end(), views.begin() + 1, views.end());
      pr.owner.insert(pr.owner.end(), views.size() - 1, static_cast<int32_t>(i));
    }
    const int64_t np = static_cast<int64_t>(pr.owner.size());
    pr.z.resize(static_cast<size_t>(np) * dims);
    auto project = [&](const std::vector<float>& in, int64_t count, float* out) {
      if (count == 0) return;
      if (basis.empty()) return void(std::copy(in.begin(), in.begin() + count * dd, out));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(count), dims, dd, 1.0f, in.data(), dd,
                  basis.data(), dims, 0.0f, out, dims);
    };
    project(base, e - b, z.data() + b * dims);
    project(probe, np, pr.z.data());
  });
  std::vector<int32_t> owner(n);
  for (int64_t i = 0; i < n; ++i) owner[i] = static_cast<int32_t>(i);
  for (Probes& pr : block_probes) {
    z.insert(z.end(), pr.z.begin(), pr.z.end());
    view.insert(view.end(), pr.view.begin(), pr.view.end());
    owner.insert(owner.end(), pr.owner.begin(), pr.owner.end());
    pr = Probes();
  }
  const int64_t points = static_cast<int64_t>(owner.size());
  // Nearest neighbours: the base views among themselves (noise, brightness, shifts along
  // unfilled axes), and every probe among the base views (shifts along filled axes,
  // crops); pairs of rows with different labels.
  const int k = std::clamp(params.neighbours, 1, 32);
  KnnParams kp;
  kp.k = k;
  kp.nprobe = kBaseProbe;
  KnnCells cells;
  const std::vector<int32_t> nb_base = ApproxKnn(z.data(), n, dims, kp, seed ^ 0x4EA2D1ull, threads, nullptr, &cells);
  const int pk = kProbeNeighbours;
  std::vector<uint8_t> wide(points - n);
  for (int64_t p = n; p < points; ++p) wide[p - n] = view[p].scale != 1;
  const std::vector<int32_t> nb_probe = SearchProbes(z, n, dims, owner, wide, cells, pk, kProbeCells, kProbeMaxD2, threads);

  // A candidate is a point of row i near the base view of row j: j's view centre lies on
  // i's, and j is predicted from i at the point's scale; that seeds the alignment.
  struct Candidate {
    int32_t i, j;  // i < j
    float d2, s;   // projected distance; scale hint predicting j from i
    float ay, ax, by, bx;  // the view centres in i and in j
  };
  std::vector<Candidate> cand;
  for (int64_t p = 0; p < points; ++p)
    for (int r = 0; r < (p < n ? k : pk); ++r) {
      const int32_t q = p < n ? nb_base[p * k + r] : nb_probe[(p - n) * pk + r];  // q: a base point, = its row
      if (q < 0) continue;
      int32_t i = owner[p], j = q;
      if (i == j || t.labels[rows[i]] == t.labels[rows[j]]) continue;
      const float* a = z.data() + p * dims;
      const float* c = z.data() + int64_t{q} * dims;
      float d2 = 0;
      for (int e = 0; e < dims; ++e) d2 += (a[e] - c[e]) * (a[e] - c[e]);
      if (d2 > (p < n ? kMaxDescriptorD2 : kProbeMaxD2)) continue;
      Candidate cd{i, j, d2, 1, 0, 0, 0, 0};
      if (image) cd.s = view[p].scale, cd.ay = view[p].cy, cd.ax = view[p].cx, cd.by = view[j].cy, cd.bx = view[j].cx;
      if (i > j) std::swap(cd.i, cd.j), cd.s = 1 / cd.s, std::swap(cd.ay, cd.by), std::swap(cd.ax, cd.bx);
      cand.push_back(cd);
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

  // Verdicts, each search started from its candidate's matching view centres.
  std::vector<Alignment> verdict(pairs.size());
  std::vector<uint8_t> identical(pairs.size(), 0);
  AlignParams ap;
  ap.vmin = static_cast<float>(t.value_min), ap.vmax = static_cast<float>(t.value_max);
  ap.geometry = image;
  ap.give_up = 2.0 * params.max_rms;
  ap.first_give_up = 2.25 * params.max_rms;
  ParallelForEach((static_cast<int64_t>(pairs.size()) + 63) / 64, threads, [&](int64_t blk, int) {
    // Pairs come sorted by their first row: it is read once for its run of pairs.
    std::vector<float> xi(t.dim()), xj(t.dim());
    int32_t have = -1;
    const int64_t end = std::min<int64_t>(static_cast<int64_t>(pairs.size()), (blk + 1) * 64);
    for (int64_t k = blk * 64; k < end; ++k) {
      int32_t i = pairs[k].first, j = pairs[k].second;
      const ImageMoments &mi = mom[i], &mj = mom[j];  // identical rows have identical moments
      if (mi.cy == mj.cy && mi.cx == mj.cx && mi.spread == mj.spread &&
          std::memcmp(t.features[rows[i]], t.features[rows[j]], t.layout.feature_bytes()) == 0) {
        identical[k] = 1;
        verdict[k].rms = 0;
        continue;
      }
      if (i != have) t.ReadRow(rows[i], xi.data()), have = i;
      t.ReadRow(rows[j], xj.data());
      // The one magnified less predicts the other, so the other maps wholly inside it.
      const Candidate& c = cand[k];
      AlignParams pp = ap;
      pp.scale_hint = c.s;
      pp.anchored = image;
      pp.anchor_ay = c.ay, pp.anchor_ax = c.ax, pp.anchor_by = c.by, pp.anchor_bx = c.bx;
      const float *a = xi.data(), *b = xj.data();
      if (pp.scale_hint > 1) {
        std::swap(i, j), std::swap(a, b), pp.scale_hint = 1 / pp.scale_hint;
        std::swap(pp.anchor_ay, pp.anchor_by), std::swap(pp.anchor_ax, pp.anchor_bx);
      }
      verdict[k] = AlignImages(a, mom[i], b, mom[j], h, w, pp);
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

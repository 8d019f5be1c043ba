// Moments, the shift/zoom/brightness-tolerant descriptor, and the pairwise alignment
// search behind the near-duplicate filter's verdict. The search is a first look from a
// few starting points (the caller's anchor, the centres of mass, the frame; without an
// anchor also the whole-pixel shifts the centres and the row/column sums suggest) on
// every third pixel, then coordinate descent over scale and sub-pixel offset on every
// second pixel; the winner is scored on all pixels.
#include "datapipe/image_align.h"

#include <algorithm>
#include <cmath>

namespace shoal {

namespace {
// The whole-pixel shift k (|k| <= 3) for which b's row sums (or column sums) pb best
// match a's, pa, moved by k, each compared over their overlap without its mean
// (brightness).
int ProfileShift(const std::vector<float>& pa, const std::vector<float>& pb) {
  const int n = static_cast<int>(pa.size());
  int best = 0;
  double best_err = 1e300;
  for (int k = -3; k <= 3; ++k) {
    const int lo = std::max(0, k), hi = std::min(n, n + k);
    if (hi - lo < n / 2) continue;
    double ma = 0, mb = 0, va = 0, vb = 0, cov = 0;
    for (int i = lo; i < hi; ++i) ma += pa[i - k], mb += pb[i];
    ma /= hi - lo, mb /= hi - lo;
    for (int i = lo; i < hi; ++i) {
      const double x = pa[i - k] - ma, y = pb[i] - mb;
      va += x * x, vb += y * y, cov += x * y;
    }
    // 1 - correlation: gain and offset do not matter.
    const double err = va > 0 && vb > 0 ? 1 - cov / std::sqrt(va * vb) : 1;
    if (err < best_err) best_err = err, best = k;
  }
  return best;
}

// Row sums and column sums of an image.
void Profiles(const float* x, int h, int w, std::vector<float>* rows, std::vector<float>* cols) {
  rows->assign(h, 0.0f), cols->assign(w, 0.0f);
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c) (*rows)[r] += x[r * w + c], (*cols)[c] += x[r * w + c];
}

// Predicting b from a under one alignment: the samples of a are kept between the fit
// and the residual pass.
class PairEvaluator {
 public:
  PairEvaluator(const float* a, const ImageMoments& ma, const float* b, const ImageMoments& mb, int h, int w,
                const AlignParams& p)
      : a_(a), b_(b), h_(h), w_(w), ma_(ma), mb_(mb), p_(p), sample_(Scratch(static_cast<size_t>(h) * w)) {
    thread_local std::vector<int> x0;
    thread_local std::vector<float> fx;
    x0.resize(w), fx.resize(w);
    col_x0_ = x0.data(), col_fx_ = fx.data();
    eps_ = 1e-3f * std::max(p.vmax - p.vmin, 1e-6f);
  }

  Alignment Eval(float s, float dy, float dx, int stride) {
    Alignment out;
    out.scale = s, out.dy = dy, out.dx = dx;
    // Single precision: at most h * w terms of values in the data's range.
    float sx = 0, sy = 0, sxx = 0, sxy = 0;
    int fit_n = 0, considered = 0;
    float ax = 0, ay = 0;  // all valid pixels: the fallback fit
    float axx = 0, axy = 0, ayy = 0;
    const float lo = p_.vmin + eps_, hi = p_.vmax - eps_;
    // Bilinear sampling is separable: where each sampled column falls in a, once.
    int ncols = 0;
    for (int c = 0; c < w_; c += stride, ++ncols) {
      const float qx = ma_.cx + s * (c - mb_.cx) + dx;
      if (qx < -0.5f || qx > w_ - 0.5f) {
        col_x0_[ncols] = -1;
        continue;
      }
      const float x = std::clamp(qx, 0.0f, w_ - 1.0f);
      col_x0_[ncols] = std::min(static_cast<int>(x), std::max(w_ - 2, 0));
      col_fx_[ncols] = w_ > 1 ? x - col_x0_[ncols] : 0.0f;
    }
    const int x1 = w_ > 1 ? 1 : 0;
    for (int r = 0; r < h_; r += stride) {
      considered += ncols;
      float* v_row = sample_ + r * w_;
      const float qy = ma_.cy + s * (r - mb_.cy) + dy;
      if (qy < -0.5f || qy > h_ - 0.5f) {
        for (int k = 0, c = 0; k < ncols; ++k, c += stride) v_row[c] = NAN;
        continue;
      }
      const float y = std::clamp(qy, 0.0f, h_ - 1.0f);
      const int y0 = std::min(static_cast<int>(y), std::max(h_ - 2, 0));
      const float fy = h_ > 1 ? y - y0 : 0.0f;
      const float* top = a_ + y0 * w_;
      const float* bot = h_ > 1 ? top + w_ : top;
      const float* b_row = b_ + r * w_;
      for (int k = 0, c = 0; k < ncols; ++k, c += stride) {
        const int x0 = col_x0_[k];
        if (x0 < 0) {
          v_row[c] = NAN;
          continue;
        }
        const float fx = col_fx_[k];
        const float t = top[x0] + fx * (top[x0 + x1] - top[x0]), u = bot[x0] + fx * (bot[x0 + x1] - bot[x0]);
        const float v = t + fy * (u - t), bv = b_row[c];
        v_row[c] = v;
        ++out.valid;
        ax += v, ay += bv, axx += v * v, axy += v * bv, ayy += bv * bv;
        if (v > lo && v < hi && bv > lo && bv < hi) sx += v, sy += bv, sxx += v * v, sxy += v * bv, ++fit_n;
      }
    }
    // Half the pixels must overlap, or a shift onto blank margin could "match" anything.
    if (out.valid < 16 || 2 * out.valid < considered) return out;
    if (fit_n < 16) sx = ax, sy = ay, sxx = axx, sxy = axy, fit_n = out.valid;
    const double mx = double(sx) / fit_n, my = double(sy) / fit_n, var = double(sxx) / fit_n - mx * mx,
                 cov = double(sxy) / fit_n - mx * my;
    double gain = var > 1e-9 ? cov / var : 1.0;
    // A copy keeps its contrast within a factor of two and is never a negative.
    if (!(gain > 0.5 && gain < 2.0)) return out;
    const double offset = my - gain * mx;
    const float g = static_cast<float>(gain), o = static_cast<float>(offset);
    const float bright = static_cast<float>(std::min(gain * p_.vmax + offset, double(p_.vmax)));
    const float dark = static_cast<float>(std::max(gain * p_.vmin + offset, double(p_.vmin)));
    float sse = 0;
    for (int r = 0; r < h_; r += stride)
      for (int c = 0; c < w_; c += stride) {
        const float v = sample_[r * w_ + c];
        if (std::isnan(v)) continue;
        const float bv = b_[r * w_ + c];
        float e;
        if (v >= hi) {  // a saturated bright: b should be at least as bright as the limit maps to
          e = std::max(0.0f, bright - bv);
        } else if (v <= lo) {  // a saturated dark: b should be at most as bright
          e = std::max(0.0f, bv - dark);
        } else {
          e = std::clamp(g * v + o, p_.vmin, p_.vmax) - bv;
        }
        sse += e * e;
      }
    out.rms = std::sqrt(sse / out.valid);
    const double var_b = double(ayy) / out.valid - (double(ay) / out.valid) * (double(ay) / out.valid);
    out.relative = var_b > 1e-12 ? out.rms / std::sqrt(var_b) : 1e30;
    out.gain = static_cast<float>(gain), out.offset = static_cast<float>(offset);
    return out;
  }

 private:
  const float *a_, *b_;
  int h_, w_;
  ImageMoments ma_, mb_;
  AlignParams p_;
  float eps_;
  float* sample_;
  int* col_x0_;  // per sampled column: its left source pixel in a, -1 outside
  float* col_fx_;  // and the weight of the right one
  // The samples' room, kept per thread: an alignment is too quick to pay for an allocation.
  static float* Scratch(size_t n) {
    thread_local std::vector<float> buf;
    if (buf.size() < n) buf.resize(n);
    return buf.data();
  }
};
}  // namespace

ImageMoments ComputeMoments(const float* x, int h, int w) {
  ImageMoments m;
  m.cy = 0.5f * (h - 1), m.cx = 0.5f * (w - 1);
  const int n = h * w;
  if (n <= 0) return m.flat = true, m;
  float lo = x[0], hi = x[0];
  for (int j = 1; j < n; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
  if (!(hi - lo > 1e-6f)) return m.flat = true, m;
  const float cut = lo + 0.1f * (hi - lo);
  // One pass of row and column masses (branch-free); the moments and the extent follow
  // from them.
  thread_local std::vector<float> col;
  col.assign(w, 0.0f);
  double mass = 0, sy = 0, sx = 0, s2 = 0;
  int y0 = h, y1 = -1, x0 = w, x1 = -1;
  for (int r = 0; r < h; ++r) {
    const float* row = x + r * w;
    float rm = 0;
    for (int c = 0; c < w; ++c) {
      const float v = std::max(row[c] - cut, 0.0f);
      rm += v, col[c] += v;
    }
    if (rm > 0) mass += rm, sy += double(rm) * r, s2 += double(rm) * r * r, y0 = std::min(y0, r), y1 = r;
  }
  for (int c = 0; c < w; ++c)
    if (col[c] > 0) sx += double(col[c]) * c, s2 += double(col[c]) * c * c, x0 = std::min(x0, c), x1 = c;
  if (!(mass > 0)) return m.flat = true, m;
  m.extent_y = y1 - y0 + 1, m.extent_x = x1 - x0 + 1;
  const double my = sy / mass, mx = sx / mass;
  m.cy = static_cast<float>(my), m.cx = static_cast<float>(mx);
  // spread^2 = E[r^2 + c^2] - |centre|^2
  const double var = std::max(0.0, s2 / mass - my * my - mx * mx);
  m.spread = std::max(0.5f, static_cast<float>(std::sqrt(var)));
  return m;
}

void BoxBlur3(const float* x, int h, int w, float* out) {
  thread_local std::vector<float> tmp;
  tmp.resize(static_cast<size_t>(h) * w);
  // Mean of each pixel's in-frame neighbours, rows then columns; the interior without
  // branches (a branch per pixel costs more than the sums).
  for (int r = 0; r < h; ++r) {
    const float* row = x + r * w;
    float* t = tmp.data() + r * w;
    if (w == 1) {
      t[0] = row[0];
      continue;
    }
    t[0] = (row[0] + row[1]) * 0.5f;
    for (int c = 1; c + 1 < w; ++c) t[c] = (row[c - 1] + row[c] + row[c + 1]) * (1.0f / 3);
    t[w - 1] = (row[w - 2] + row[w - 1]) * 0.5f;
  }
  for (int r = 0; r < h; ++r) {
    const float* mid = tmp.data() + r * w;
    const float* up = r > 0 ? mid - w : nullptr;
    const float* down = r + 1 < h ? mid + w : nullptr;
    float* o = out + r * w;
    if (up && down) {
      for (int c = 0; c < w; ++c) o[c] = (up[c] + mid[c] + down[c]) * (1.0f / 3);
    } else if (up || down) {
      const float* other = up ? up : down;
      for (int c = 0; c < w; ++c) o[c] = (other[c] + mid[c]) * 0.5f;
    } else {
      for (int c = 0; c < w; ++c) o[c] = mid[c];
    }
  }
}

void ImageDescriptor(const float* x, int h, int w, float lo, float cy, float cx, float step, int g, float* out) {
  const float mid = 0.5f * (g - 1);
  // Bilinear sampling is separable: each grid row's and column's source pixels and
  // weights once (a negative index: outside the frame, background).
  constexpr int kMaxGrid = 32;
  int ys[kMaxGrid], xs[kMaxGrid];
  float fy[kMaxGrid], fx[kMaxGrid];
  auto setup = [&](float centre, int len, int* idx, float* f) {
    for (int i = 0; i < g; ++i) {
      const float p = centre + (i - mid) * step;
      if (p < -0.5f || p > len - 0.5f) {
        idx[i] = -1;
        continue;
      }
      const float q = std::clamp(p, 0.0f, len - 1.0f);
      idx[i] = std::min(static_cast<int>(q), len - 2 < 0 ? 0 : len - 2);
      f[i] = len > 1 ? q - idx[i] : 0;
    }
  };
  g = std::min(g, kMaxGrid);
  const int n = g * g;
  setup(cy, h, ys, fy);
  setup(cx, w, xs, fx);
  const int dy = h > 1 ? w : 0, dx = w > 1 ? 1 : 0;
  // Each grid row: the two source rows blended over the columns the grid uses (a loop
  // the compiler vectorises), then sampled at the grid's columns.
  int c0 = w, c1 = -1;
  for (int j = 0; j < g; ++j)
    if (xs[j] >= 0) c0 = std::min(c0, xs[j]), c1 = std::max(c1, xs[j] + dx);
  thread_local std::vector<float> line;
  line.resize(w);
  for (int i = 0; i < g; ++i) {
    float* o = out + i * g;
    if (ys[i] < 0) {
      std::fill(o, o + g, lo);
      continue;
    }
    const float* top = x + ys[i] * w;
    const float* bot = top + dy;
    const float f = fy[i];
    for (int c = c0; c <= c1; ++c) line[c] = top[c] + f * (bot[c] - top[c]);
    for (int j = 0; j < g; ++j) o[j] = xs[j] < 0 ? lo : line[xs[j]] + fx[j] * (line[xs[j] + dx] - line[xs[j]]);
  }
  // Sums in four interleaved parts, so they vectorise too.
  auto sum4 = [&](auto term) {
    float part[4] = {0, 0, 0, 0};
    int j = 0;
    for (; j + 4 <= n; j += 4)
      for (int l = 0; l < 4; ++l) part[l] += term(j + l);
    for (; j < n; ++j) part[0] += term(j);
    return (part[0] + part[1]) + (part[2] + part[3]);
  };
  const float mean = sum4([&](int j) { return out[j]; }) / n;
  for (int j = 0; j < n; ++j) out[j] -= mean;
  const float ss = sum4([&](int j) { return out[j] * out[j]; });
  const float inv = ss > 1e-12f ? 1.0f / std::sqrt(ss) : 0.0f;
  for (int j = 0; j < n; ++j) out[j] *= inv;
}

Alignment AlignImages(const float* a, const ImageMoments& ma, const float* b, const ImageMoments& mb, int h, int w,
                      const AlignParams& p) {
  if (!p.geometry || ma.flat || mb.flat) {
    ImageMoments centre;  // same reference point for both: pixel for pixel
    PairEvaluator ev(a, centre, b, centre, h, w, p);
    return ev.Eval(1.0f, 0.0f, 0.0f, 1);
  }
  PairEvaluator ev(a, ma, b, mb, h, w, p);
  // Starting points: with an anchor, the one it gives (a caller that matched
  // descriptions knows where they were centred). Otherwise the scale hint (or the
  // moments' ratio) about the centres of mass, the same about the frame's centre (a crop
  // cuts content off at the border, which moves the centre of mass), and the whole-pixel
  // shift the centres suggest.
  const float s0 = p.scale_hint > 0 ? p.scale_hint : std::clamp(ma.spread / mb.spread, 0.6f, 1.67f);
  struct Start {
    float s, dy, dx;
  };
  std::vector<Start> starts;
  if (p.anchored) {
    starts.push_back({s0, p.anchor_ay - ma.cy - s0 * (p.anchor_by - mb.cy), p.anchor_ax - ma.cx - s0 * (p.anchor_bx - mb.cx)});
    // Also about the centres of mass and about the frame: a brightness change that
    // clamps, or noise, can move the extent or the centre of mass of one of the two.
    const float fy = 0.5f * (h - 1), fx = 0.5f * (w - 1);
    starts.push_back({s0, 0, 0});
    starts.push_back({s0, fy - ma.cy + s0 * (mb.cy - fy), fx - ma.cx + s0 * (mb.cx - fx)});
  } else {
    const float fy = 0.5f * (h - 1), fx = 0.5f * (w - 1);
    const float by = mb.cy - ma.cy, bx = mb.cx - ma.cx;
    starts = {{s0, 0, 0}, {s0, fy - ma.cy + s0 * (mb.cy - fy), fx - ma.cx + s0 * (mb.cx - fx)}};
    if (std::abs(s0 - 1) < 0.05f) {
      starts.push_back({1.0f, by - std::round(by), bx - std::round(bx)});
      // Content cut off by a shift moves the centre of mass; the shift that best lines up
      // the row and column sums does not care.
      std::vector<float> ra, ca, rb, cb;
      Profiles(a, h, w, &ra, &ca), Profiles(b, h, w, &rb, &cb);
      const int ky = ProfileShift(ra, rb), kx = ProfileShift(ca, cb);
      if (ky != std::round(by) || kx != std::round(bx)) starts.push_back({1.0f, by - ky, bx - kx});
    }
  }
  // First look, every third pixel: most candidates are clearly different images.
  Alignment best;
  for (size_t k = 0; k < starts.size(); ++k) {
    const Start& st = starts[k];
    bool seen = false;  // the same as an earlier start (an anchor on the centres of mass)
    for (size_t e = 0; e < k; ++e)
      seen |= std::abs(starts[e].s - st.s) < 1e-3f && std::abs(starts[e].dy - st.dy) < 1e-3f &&
              std::abs(starts[e].dx - st.dx) < 1e-3f;
    if (seen) continue;
    Alignment r = ev.Eval(st.s, st.dy, st.dx, 3);
    if (r.rms < best.rms) best = r;
  }
  const float first_rms = static_cast<float>(std::min(best.rms, 1e30));
  best.first_rms = first_rms;
  if (best.rms > p.first_give_up) return best;
  // Coordinate descent on every second pixel: offset steps of 1, 0.5, 0.25 pixels and
  // scale steps of 4%, 2%, 1%, moving to the best neighbour until none is better.
  best = ev.Eval(best.scale, best.dy, best.dx, 2);
  auto consider = [&](float s, float dy, float dx) {
    if (std::abs(dy) > p.max_shift || std::abs(dx) > p.max_shift || s < 0.5f || s > 2.0f) return false;
    Alignment r = ev.Eval(s, dy, dx, 2);
    if (r.rms >= best.rms) return false;
    best = r;
    return true;
  };
  float step = 1.0f, sstep = 0.04f;
  for (int level = 0; level < 3; ++level, step *= 0.5f, sstep *= 0.5f) {
    for (int moves = 0; moves < 8; ++moves) {
      const Alignment c = best;
      bool moved = false;
      moved |= consider(c.scale, c.dy + step, c.dx) || consider(c.scale, c.dy - step, c.dx);
      moved |= consider(best.scale, best.dy, best.dx + step) || consider(best.scale, best.dy, best.dx - step);
      moved |= consider(best.scale * std::exp(sstep), best.dy, best.dx) ||
               consider(best.scale * std::exp(-sstep), best.dy, best.dx);
      if (!moved) break;
    }
    if (level == 0 && best.rms > p.give_up) return best.first_rms = first_rms, best;
  }
  if (best.rms >= 1e29) return best;
  Alignment out = ev.Eval(best.scale, best.dy, best.dx, 1);
  out.first_rms = first_rms;
  return out;
}

}  // namespace shoal

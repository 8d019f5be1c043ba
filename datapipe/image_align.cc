// Moments, the shift/zoom/brightness-tolerant descriptor, and the pairwise alignment
// search behind the near-duplicate filter's verdict. The search is coordinate descent
// over scale and sub-pixel offset around the estimate the moments give, plus the
// integer shifts next to it, on every second pixel; the winner is scored on all pixels.
#include "datapipe/image_align.h"

#include <algorithm>
#include <cmath>

namespace shoal {

namespace {
// Bilinear sample at (y, x), both already inside [0, h-1] x [0, w-1].
inline float Bilinear(const float* im, int h, int w, float y, float x) {
  const int y0 = std::min(static_cast<int>(y), h - 2 < 0 ? 0 : h - 2);
  const int x0 = std::min(static_cast<int>(x), w - 2 < 0 ? 0 : w - 2);
  const float fy = h > 1 ? y - y0 : 0, fx = w > 1 ? x - x0 : 0;
  const int y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
  const float top = im[y0 * w + x0] + fx * (im[y0 * w + x1] - im[y0 * w + x0]);
  const float bot = im[y1 * w + x0] + fx * (im[y1 * w + x1] - im[y1 * w + x0]);
  return top + fy * (bot - top);
}

// The whole-pixel shift k (|k| <= 3) for which b's row sums (columns: column sums) best
// match a's moved by k, each compared over their overlap without its mean (brightness).
int ProfileShift(const float* a, const float* b, int h, int w, bool rows) {
  const int n = rows ? h : w;
  std::vector<float> pa(n, 0.0f), pb(n, 0.0f);
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c) {
      pa[rows ? r : c] += a[r * w + c];
      pb[rows ? r : c] += b[r * w + c];
    }
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

// Predicting b from a under one alignment: the samples of a are kept between the fit
// and the residual pass.
class PairEvaluator {
 public:
  PairEvaluator(const float* a, const ImageMoments& ma, const float* b, const ImageMoments& mb, int h, int w,
                const AlignParams& p)
      : a_(a), b_(b), h_(h), w_(w), ma_(ma), mb_(mb), p_(p), sample_(static_cast<size_t>(h) * w) {
    eps_ = 1e-3f * std::max(p.vmax - p.vmin, 1e-6f);
  }

  Alignment Eval(float s, float dy, float dx, int stride) {
    Alignment out;
    out.scale = s, out.dy = dy, out.dx = dx;
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int fit_n = 0, considered = 0;
    double ax = 0, ay = 0;  // all valid pixels: the fallback fit
    double axx = 0, axy = 0, ayy = 0;
    const float lo = p_.vmin + eps_, hi = p_.vmax - eps_;
    for (int r = 0; r < h_; r += stride)
      for (int c = 0; c < w_; c += stride) {
        ++considered;
        float qy = ma_.cy + s * (r - mb_.cy) + dy, qx = ma_.cx + s * (c - mb_.cx) + dx;
        float& v = sample_[r * w_ + c];
        if (qy < -0.5f || qx < -0.5f || qy > h_ - 0.5f || qx > w_ - 0.5f) {
          v = NAN;
          continue;
        }
        v = Bilinear(a_, h_, w_, std::clamp(qy, 0.0f, h_ - 1.0f), std::clamp(qx, 0.0f, w_ - 1.0f));
        const float bv = b_[r * w_ + c];
        ++out.valid;
        ax += v, ay += bv, axx += double(v) * v, axy += double(v) * bv, ayy += double(bv) * bv;
        if (v > lo && v < hi && bv > lo && bv < hi) sx += v, sy += bv, sxx += double(v) * v, sxy += double(v) * bv, ++fit_n;
      }
    // Half the pixels must overlap, or a shift onto blank margin could "match" anything.
    if (out.valid < 16 || 2 * out.valid < considered) return out;
    if (fit_n < 16) sx = ax, sy = ay, sxx = axx, sxy = axy, fit_n = out.valid;
    const double mx = sx / fit_n, my = sy / fit_n, var = sxx / fit_n - mx * mx, cov = sxy / fit_n - mx * my;
    double gain = var > 1e-9 ? cov / var : 1.0;
    // A copy keeps its contrast within a factor of two and is never a negative.
    if (!(gain > 0.5 && gain < 2.0)) return out;
    const double offset = my - gain * mx;
    double sse = 0;
    for (int r = 0; r < h_; r += stride)
      for (int c = 0; c < w_; c += stride) {
        const float v = sample_[r * w_ + c];
        if (std::isnan(v)) continue;
        const float bv = b_[r * w_ + c];
        double e;
        if (v >= hi) {  // a saturated bright: b should be at least as bright as the limit maps to
          e = std::max(0.0, std::min(gain * p_.vmax + offset, double(p_.vmax)) - bv);
        } else if (v <= lo) {  // a saturated dark: b should be at most as bright
          e = std::max(0.0, bv - std::max(gain * p_.vmin + offset, double(p_.vmin)));
        } else {
          e = std::clamp(gain * v + offset, double(p_.vmin), double(p_.vmax)) - bv;
        }
        sse += e * e;
      }
    out.rms = std::sqrt(sse / out.valid);
    const double var_b = ayy / out.valid - (ay / out.valid) * (ay / out.valid);
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
  std::vector<float> sample_;
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
  const int r0 = 0, r1 = h - 1, c0 = 0, c1 = w - 1;
  const float cut = lo + 0.1f * (hi - lo);
  double mass = 0, sy = 0, sx = 0;
  for (int r = r0; r <= r1; ++r)
    for (int c = c0; c <= c1; ++c) {
      const float v = x[r * w + c] - cut;
      if (v > 0) mass += v, sy += double(v) * r, sx += double(v) * c;
    }
  if (!(mass > 0)) return m.flat = true, m;
  m.cy = static_cast<float>(sy / mass), m.cx = static_cast<float>(sx / mass);
  double s2 = 0;
  for (int r = r0; r <= r1; ++r)
    for (int c = c0; c <= c1; ++c) {
      const float v = x[r * w + c] - cut;
      if (v > 0) s2 += v * ((r - m.cy) * (r - m.cy) + (c - m.cx) * (c - m.cx));
    }
  m.spread = std::max(0.5f, static_cast<float>(std::sqrt(s2 / mass)));
  return m;
}

void BoxBlur3(const float* x, int h, int w, float* out) {
  std::vector<float> tmp(static_cast<size_t>(h) * w);
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c) {
      const float* row = x + r * w;
      float s = row[c], k = 1;
      if (c > 0) s += row[c - 1], ++k;
      if (c + 1 < w) s += row[c + 1], ++k;
      tmp[r * w + c] = s / k;
    }
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c) {
      float s = tmp[r * w + c], k = 1;
      if (r > 0) s += tmp[(r - 1) * w + c], ++k;
      if (r + 1 < h) s += tmp[(r + 1) * w + c], ++k;
      out[r * w + c] = s / k;
    }
}

void ImageDescriptor(const float* x, int h, int w, float cy, float cx, float zoom, int g, float* out) {
  const int n = g * g;
  float lo = x[0];
  for (int j = 1; j < h * w; ++j) lo = std::min(lo, x[j]);
  const float step = static_cast<float>(std::max(h, w)) / (g * zoom), mid = 0.5f * (g - 1);
  double sum = 0;
  for (int i = 0; i < g; ++i)
    for (int j = 0; j < g; ++j) {
      const float y = cy + (i - mid) * step, xx = cx + (j - mid) * step;
      float v = lo;  // outside the frame: background
      if (y >= -0.5f && xx >= -0.5f && y <= h - 0.5f && xx <= w - 0.5f)
        v = Bilinear(x, h, w, std::clamp(y, 0.0f, h - 1.0f), std::clamp(xx, 0.0f, w - 1.0f));
      out[i * g + j] = v;
      sum += v;
    }
  const float mean = static_cast<float>(sum / n);
  double ss = 0;
  for (int j = 0; j < n; ++j) out[j] -= mean, ss += double(out[j]) * out[j];
  const float inv = ss > 1e-12 ? static_cast<float>(1.0 / std::sqrt(ss)) : 0.0f;
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
  // Starting points: the scale hint (or the moments' ratio) about the centres of mass,
  // the same about the frame's centre (a crop cuts content off at the border, which
  // moves the centre of mass), and the whole-pixel shift the centres suggest.
  const float s0 = p.scale_hint > 0 ? p.scale_hint : std::clamp(ma.spread / mb.spread, 0.6f, 1.67f);
  const float fy = 0.5f * (h - 1), fx = 0.5f * (w - 1);
  const float by = mb.cy - ma.cy, bx = mb.cx - ma.cx;
  struct Start {
    float s, dy, dx;
  };
  std::vector<Start> starts = {{s0, 0, 0}, {s0, fy - ma.cy + s0 * (mb.cy - fy), fx - ma.cx + s0 * (mb.cx - fx)}};
  if (std::abs(s0 - 1) < 0.05f) {
    starts.push_back({1.0f, by - std::round(by), bx - std::round(bx)});
    // Content cut off by a shift moves the centre of mass; the shift that best lines up
    // the row and column sums does not care.
    const int ky = ProfileShift(a, b, h, w, true), kx = ProfileShift(a, b, h, w, false);
    if (ky != std::round(by) || kx != std::round(bx)) starts.push_back({1.0f, by - ky, bx - kx});
  }
  // First look, every third pixel: most candidates are clearly different images.
  Alignment best;
  for (const Start& st : starts) {
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

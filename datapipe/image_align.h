// Image geometry for the near-duplicate filter: a descriptor that, centred and scaled
// where the caller chooses, undoes shifts, crops/zooms and brightness/contrast changes
// (for finding candidates), and a pairwise alignment that measures how exactly one image
// is a transformed copy of another (for the verdict). Images are row-major h x w floats
// in the dataset's declared value range.
#pragma once

#include <cstdint>
#include <vector>

namespace shoal {

// Centre of mass and spread (RMS radius) of an image's content: the values more than a
// tenth of the image's own range above its minimum, weighted by that excess, so neither
// brightness nor contrast nor a little background noise moves them much.
// extent_y, extent_x: rows and columns from the first to the last holding such content
// (an axis the content fills loses some of it to a shift along that axis).
struct ImageMoments {
  float cy = 0, cx = 0, spread = 1;
  int extent_y = 0, extent_x = 0;
  bool flat = false;  // constant image: no geometry
};
ImageMoments ComputeMoments(const float* image, int h, int w);

// `blurred` (an image after BoxBlur3, so a fraction of a pixel of misalignment costs
// little) resampled on a g x g grid centred on (cy, cx) with a grid step of `step`
// pixels, `background` outside the frame, then shifted to zero mean and scaled to unit
// norm, so gain and offset cancel. Centred on the centre of mass it follows a shift of
// content that stays inside the frame; centred on the frame with the step divided by z
// it matches a copy cropped about the centre and magnified z. g is at most 32.
void BoxBlur3(const float* image, int h, int w, float* out);
void ImageDescriptor(const float* blurred, int h, int w, float background, float cy, float cx, float step, int g,
                     float* out);

// How well `b` is predicted by `a` under the best similarity alignment found (b(p) from
// a at centre_a + scale * (p - centre_b) + (dy, dx)) and a least-squares gain/offset.
// Clamping to [vmin, vmax] is respected: where a sits at a range limit only the
// direction of b's difference counts (a saturated pixel says "at least this bright").
// rms: root mean square residual over the pixels of b whose source lies inside a.
struct Alignment {
  double rms = 1e30;
  float scale = 1, dy = 0, dx = 0, gain = 1, offset = 0;
  double relative = 1e30;  // rms / the standard deviation of b over the pixels compared
  int valid = 0;  // pixels compared
  float first_rms = 0;  // the quick first look (hint scale, every third pixel)
};
struct AlignParams {
  float vmin = 0, vmax = 1;
  float max_shift = 3;      // pixels the search may move the estimate from the moments
  float scale_hint = 0;     // > 0: search scales around this one (b magnified 1 / hint), not the moments' ratio
  // anchored: the search also starts from b's point (anchor_by, anchor_bx) lying on a's
  // point (anchor_ay, anchor_ax) at scale_hint (where the caller's descriptions matched),
  // and no longer from the whole-pixel shifts the centres and row/column sums suggest.
  bool anchored = false;
  float anchor_ay = 0, anchor_ax = 0, anchor_by = 0, anchor_bx = 0;
  bool geometry = true;     // false: compare pixel for pixel (scale 1, no shift), gain/offset only
  double give_up = 1e30;    // coarse residual above this: stop searching (clearly not a copy)
  double first_give_up = 1e30;  // the same for the first look
};
Alignment AlignImages(const float* a, const ImageMoments& ma, const float* b, const ImageMoments& mb, int h, int w,
                      const AlignParams& params);

}  // namespace shoal

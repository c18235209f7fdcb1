// The arithmetic every kernel shares, for the host and the device: what odd input values
// mean, box sums from a summed-area table, the peak-box rule and the label-weight rule
// (docs/design.md, "The algorithm").
//
// The kernels are safe by construction, so that callers that made their own pairings and
// boxes (the mixers) need no value checks and no host sync: a saliency value that is
// negative, NaN or infinite counts as 0; a box is clamped into the image; a source index
// outside [0, B) means "the image itself". The public Python ops validate users' values
// before they get here (check=True).
#pragma once

#include <c10/macros/Macros.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

namespace saliencymixplus {

// A saliency value as the kernels count it: v if 0 < v < inf, else 0 (both tests taken, no
// branch, so that a loop over a map can vectorize).
template <typename T>
C10_HOST_DEVICE inline double saliency_value(T v) {
  const double d = static_cast<double>(v);
  const bool counts = (d > 0.0) & (d <= DBL_MAX);
  return counts ? d : 0.0;
}

C10_HOST_DEVICE inline int64_t clamp_to(int64_t value, int64_t low, int64_t high) {
  return value < low ? low : (value > high ? high : value);
}

// The source of image i: perm value p when it names an image of the batch, else i itself.
C10_HOST_DEVICE inline int64_t source_of(int64_t p, int64_t i, int64_t batch) {
  return p >= 0 && p < batch ? p : i;
}

// (y1, x1, y2, x2) clamped into an H x W image: 0 <= y1 <= y2 <= H and 0 <= x1 <= x2 <= W.
C10_HOST_DEVICE inline void clamp_box(const int64_t* in, int64_t height, int64_t width, int64_t* out) {
  out[0] = clamp_to(in[0], 0, height);
  out[1] = clamp_to(in[1], 0, width);
  out[2] = clamp_to(in[2], out[0], height);
  out[3] = clamp_to(in[3], out[1], width);
}

// A summed-area table of an H x W map is (H + 1) x (W + 1) values, row-major, with
// sat[y][x] = sum of map[:y, :x]. Rows are summed first, then columns.
template <typename S>
C10_HOST_DEVICE inline S box_sum(const S* sat, int64_t width, int64_t y1, int64_t x1, int64_t y2, int64_t x2) {
  const int64_t stride = width + 1;
  return sat[y2 * stride + x2] - sat[y1 * stride + x2] - sat[y2 * stride + x1] + sat[y1 * stride + x1];
}

// The published peak box: centred on (py, px), half sizes h // 2 and w // 2, clipped.
C10_HOST_DEVICE inline void peak_box(
    int64_t py, int64_t px, int64_t h, int64_t w, int64_t height, int64_t width, int64_t* box) {
  box[0] = clamp_to(py - h / 2, 0, height);
  box[1] = clamp_to(px - w / 2, 0, width);
  box[2] = clamp_to(py + h / 2, 0, height);
  box[3] = clamp_to(px + w / 2, 0, width);
}

// lam_i from the target's total and in-box saliency and the source's; the area rule
// 1 - area / (H * W) where a total or a + b is 0, or the result is not finite.
C10_HOST_DEVICE inline float label_weight(
    double total_target, double inside_target, double total_source, double inside_source,
    const int64_t* box, int64_t height, int64_t width) {
  const double area = static_cast<double>((box[2] - box[0]) * (box[3] - box[1]));
  const double area_rule = 1.0 - area / static_cast<double>(height * width);
  if (!(total_target > 0) || !(total_source > 0)) {
    return static_cast<float>(area_rule);
  }
  const double a = (total_target - inside_target) / total_target;
  const double b = inside_source / total_source;
  const double lam = a / (a + b);
  if (!((a + b) > 0) || !std::isfinite(lam)) {
    return static_cast<float>(area_rule);
  }
  return static_cast<float>(lam);
}

}  // namespace saliencymixplus

// The arithmetic every kernel shares, for the host and the device: box sums from a
// summed-area table, the peak-box rule and the label-weight rule (ARCHITECTURE.md, step 4).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace saliencymixplus {

// A summed-area table of an H x W map is (H + 1) x (W + 1) doubles, row-major, with
// sat[y][x] = sum of map[:y, :x]. Rows are summed first, then columns.
C10_HOST_DEVICE inline double box_sum(
    const double* sat, int64_t width, int64_t y1, int64_t x1, int64_t y2, int64_t x2) {
  const int64_t stride = width + 1;
  return sat[y2 * stride + x2] - sat[y1 * stride + x2] - sat[y2 * stride + x1] + sat[y1 * stride + x1];
}

C10_HOST_DEVICE inline int64_t clamp_to(int64_t value, int64_t low, int64_t high) {
  return value < low ? low : (value > high ? high : value);
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

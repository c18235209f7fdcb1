// The CPU building blocks the op kernels share: summed-area tables (one map at a time, in a
// buffer that stays in cache), the window and peak searches, direct box sums for the label
// weights, the one-pass paste, and the rule for when to use more than one thread.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "../mix_math.h"
#include "../paste_layout.h"

namespace saliencymixplus {
namespace cpu {

// A task of at least this many elementary steps (about a millisecond) before a second thread
// is worth waking: a CIFAR batch runs inline on one thread, so a busy machine cannot make it
// slower than one thread; an ImageNet batch is split over the batch.
constexpr int64_t kMinTaskWork = int64_t{1} << 20;

// f(begin, end) over the items [0, n), each costing about `work_per_item` steps.
template <typename F>
void parallel_items(int64_t n, int64_t work_per_item, const F& f) {
  const int64_t grain = std::max<int64_t>(1, kMinTaskWork / std::max<int64_t>(1, work_per_item));
  at::parallel_for(0, n, grain, f);
}

// sat (H + 1) x (W + 1) of the row-major H x W map s, summed in float64.
template <typename T>
void summed_area(const T* s, int64_t height, int64_t width, double* sat) {
  const int64_t stride = width + 1;
  for (int64_t x = 0; x <= width; ++x) {
    sat[x] = 0.0;
  }
  for (int64_t y = 0; y < height; ++y) {
    double row = 0.0;
    sat[(y + 1) * stride] = 0.0;
    for (int64_t x = 0; x < width; ++x) {
      row += saliency_value(s[y * width + x]);
      sat[(y + 1) * stride + x + 1] = sat[y * stride + x + 1] + row;
    }
  }
}

// Sum of a row-major map over [y1, y2) x [x1, x2) of `box`, float64, in row-major order
// (so a box over the whole map gives exactly map_sum).
template <typename T>
double box_sum_direct(const T* s, int64_t width, const int64_t* box) {
  double sum = 0.0;
  for (int64_t y = box[0]; y < box[2]; ++y) {
    for (int64_t x = box[1]; x < box[3]; ++x) {
      sum += saliency_value(s[y * width + x]);
    }
  }
  return sum;
}

// Sum of all n values, float64, in order.
template <typename T>
double map_sum(const T* s, int64_t n) {
  double sum = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    sum += saliency_value(s[k]);
  }
  return sum;
}

// map_sum of each of the B maps of a contiguous [B, H, W] array.
template <typename T>
std::vector<double> map_sums(const T* s, int64_t batch, int64_t plane) {
  std::vector<double> totals(batch);
  parallel_items(batch, plane, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      totals[b] = map_sum(s + b * plane, plane);
    }
  });
  return totals;
}

// lam_i (mix_math.h) of the target map and the source map, given their totals; `box` inside the map.
template <typename T>
float weight_of(const T* target, double target_total, const T* source, double source_total, const int64_t* box,
                int64_t height, int64_t width) {
  return label_weight(target_total, box_sum_direct(target, width, box), source_total,
                      box_sum_direct(source, width, box), box, height, width);
}

// The h x w window with the largest sum, the first in row-major order on ties.
inline void best_window(const double* sat, int64_t height, int64_t width, int64_t h, int64_t w, int64_t* box) {
  double best = -std::numeric_limits<double>::infinity();
  int64_t best_y = 0, best_x = 0;
  for (int64_t y = 0; y + h <= height; ++y) {
    for (int64_t x = 0; x + w <= width; ++x) {
      const double v = box_sum(sat, width, y, x, y + h, x + w);
      if (v > best) {
        best = v;
        best_y = y;
        best_x = x;
      }
    }
  }
  box[0] = best_y;
  box[1] = best_x;
  box[2] = best_y + h;
  box[3] = best_x + w;
}

// The flat index of the largest saliency value, the first on ties.
template <typename T>
int64_t argmax(const T* s, int64_t n) {
  int64_t best = 0;
  double best_value = saliency_value(s[0]);
  for (int64_t k = 1; k < n; ++k) {
    const double v = saliency_value(s[k]);
    if (v > best_value) {
      best_value = v;
      best = k;
    }
  }
  return best;
}

// The layout paste works in: a Tensor[B, C, H, W] contiguous either as NCHW or as NHWC,
// seen as B images of `planes` planes of H rows of `row_length` elements, `per_x` elements
// per pixel.
struct RowLayout {
  int64_t planes;
  int64_t height;
  int64_t row_length;
  int64_t per_x;
};

inline RowLayout row_layout(const at::Tensor& images, at::MemoryFormat format) {
  const int64_t channels = images.size(1), height = images.size(2), width = images.size(3);
  if (format == at::MemoryFormat::ChannelsLast) {
    return {1, height, width * channels, channels};
  }
  return {channels, height, width, 1};
}

// out[b] = in[b] with box b of in[source_of(perm[b])] pasted in, every byte of out written
// once (in and out contiguous in the same `format`; bytes are copied, so every dtype works).
inline void paste_images(
    const at::Tensor& in, at::Tensor& out, const int64_t* perm, const int64_t* boxes, at::MemoryFormat format) {
  const RowLayout layout = row_layout(in, format);
  const int64_t batch = in.size(0), width = in.size(3);
  const int64_t item = static_cast<int64_t>(in.element_size());
  const int64_t row_bytes = layout.row_length * item;
  const int64_t plane_bytes = layout.height * row_bytes;
  const int64_t image_bytes = layout.planes * plane_bytes;
  const char* src = static_cast<const char*>(in.const_data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  parallel_items(batch, image_bytes / 8, [&](int64_t begin, int64_t end) {  // memcpy: ~8 bytes a step
    for (int64_t b = begin; b < end; ++b) {
      int64_t box[4];
      clamp_box(boxes + 4 * b, layout.height, width, box);
      const char* self = src + b * image_bytes;
      const char* other = src + source_of(perm[b], b, batch) * image_bytes;
      char* to = dst + b * image_bytes;
      const int64_t lo = box[1] * layout.per_x * item, hi = box[3] * layout.per_x * item;
      if (box[0] == box[2] || lo == hi) {
        std::memcpy(to, self, image_bytes);
        continue;
      }
      for (int64_t plane = 0; plane < layout.planes; ++plane) {
        const int64_t p = plane * plane_bytes;
        std::memcpy(to + p, self + p, box[0] * row_bytes);  // the rows above the box
        for (int64_t y = box[0]; y < box[2]; ++y) {
          const int64_t r = p + y * row_bytes;
          std::memcpy(to + r, self + r, lo);
          std::memcpy(to + r + lo, other + r + lo, hi - lo);
          std::memcpy(to + r + hi, self + r + hi, row_bytes - hi);
        }
        const int64_t below = p + box[2] * row_bytes;
        std::memcpy(to + below, self + below, (layout.height - box[2]) * row_bytes);
      }
    }
  });
}

}  // namespace cpu
}  // namespace saliencymixplus

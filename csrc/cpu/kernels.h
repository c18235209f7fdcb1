// The CPU building blocks the op kernels share: summed-area tables (one map at a time, in a
// buffer that stays in cache), the window and peak searches, direct box sums for the label
// weights, and the paste.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <limits>
#include <vector>

#include "../mix_math.h"
#include "../paste_layout.h"

namespace saliencymixplus {
namespace cpu {

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
      row += static_cast<double>(s[y * width + x]);
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
      sum += static_cast<double>(s[y * width + x]);
    }
  }
  return sum;
}

// Sum of all n values, float64, in order.
template <typename T>
double map_sum(const T* s, int64_t n) {
  double sum = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    sum += static_cast<double>(s[k]);
  }
  return sum;
}

// map_sum of each of the B maps of a contiguous [B, H, W] array.
template <typename T>
std::vector<double> map_sums(const T* s, int64_t batch, int64_t plane) {
  std::vector<double> totals(batch);
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      totals[b] = map_sum(s + b * plane, plane);
    }
  });
  return totals;
}

// lam_i (mix_math.h) of the target map and the source map, given their totals.
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

// The flat index of the largest value, the first on ties.
template <typename T>
int64_t argmax(const T* s, int64_t n) {
  int64_t best = 0;
  double best_value = static_cast<double>(s[0]);
  for (int64_t k = 1; k < n; ++k) {
    const double v = static_cast<double>(s[k]);
    if (v > best_value) {
      best_value = v;
      best = k;
    }
  }
  return best;
}

// The layout paste works in: a Tensor[B, C, H, W] contiguous either as NCHW or as NHWC,
// seen as B images of `rows` rows of `row_length` elements, `per_x` elements per pixel.
struct RowLayout {
  int64_t rows;
  int64_t row_length;
  int64_t per_x;
  int64_t height;
};

inline RowLayout row_layout(const at::Tensor& images, at::MemoryFormat format) {
  const int64_t channels = images.size(1), height = images.size(2), width = images.size(3);
  if (format == at::MemoryFormat::ChannelsLast) {
    return {height, width * channels, channels, height};
  }
  return {channels * height, width, 1, height};
}

// Copies box b of in[perm[b]] into out[b], whose other pixels already hold in[b] (out is a
// copy of in). `in` and `out` are contiguous in the same `format`; bytes are copied, so every
// dtype works.
inline void paste_boxes(
    const at::Tensor& in, at::Tensor& out, const int64_t* perm, const int64_t* boxes, at::MemoryFormat format) {
  const RowLayout layout = row_layout(in, format);
  const int64_t item = static_cast<int64_t>(in.element_size());
  const int64_t row_bytes = layout.row_length * item;
  const int64_t image_bytes = layout.rows * row_bytes;
  const int64_t planes = layout.rows / layout.height;  // C for NCHW, 1 for NHWC
  const char* src = static_cast<const char*>(in.const_data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, in.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t* box = boxes + 4 * b;
      const int64_t start = box[1] * layout.per_x * item, length = (box[3] - box[1]) * layout.per_x * item;
      if (length == 0) {
        continue;
      }
      for (int64_t plane = 0; plane < planes; ++plane) {
        for (int64_t y = box[0]; y < box[2]; ++y) {
          const int64_t offset = (plane * layout.height + y) * row_bytes + start;
          std::memcpy(dst + b * image_bytes + offset, src + perm[b] * image_bytes + offset, length);
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace saliencymixplus

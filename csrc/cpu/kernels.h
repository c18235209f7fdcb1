// The CPU building blocks the op kernels share: summed-area tables, the window and peak
// searches, and the row-wise paste.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <limits>

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

// Summed-area tables of every map of a contiguous Tensor[B, H, W] -> double Tensor[B, H+1, W+1].
inline at::Tensor summed_area_tables(const at::Tensor& saliency) {
  const int64_t batch = saliency.size(0), height = saliency.size(1), width = saliency.size(2);
  at::Tensor sat = at::empty({batch, height + 1, width + 1}, saliency.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, saliency.scalar_type(), "summed_area", [&] {
    const scalar_t* s = saliency.const_data_ptr<scalar_t>();
    double* out = sat.data_ptr<double>();
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        summed_area(s + b * height * width, height, width, out + b * (height + 1) * (width + 1));
      }
    });
  });
  return sat;
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

// out[b] = in[b] with boxes[b] of in[perm[b]] pasted in. `in` and `out` are contiguous in
// the same `format`; bytes are copied, so every dtype works.
inline void paste_rows(
    const at::Tensor& in, at::Tensor& out, const int64_t* perm, const int64_t* boxes, at::MemoryFormat format) {
  const RowLayout layout = row_layout(in, format);
  const int64_t item = static_cast<int64_t>(in.element_size());
  const int64_t row_bytes = layout.row_length * item;
  const int64_t image_bytes = layout.rows * row_bytes;
  const char* src = static_cast<const char*>(in.const_data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t total_rows = in.size(0) * layout.rows;
  at::parallel_for(0, total_rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / layout.rows, row = r % layout.rows;
      const int64_t y = row % layout.height;
      const int64_t* box = boxes + 4 * b;
      const char* target = src + b * image_bytes + row * row_bytes;
      char* out_row = dst + b * image_bytes + row * row_bytes;
      if (y < box[0] || y >= box[2] || box[1] == box[3]) {
        std::memcpy(out_row, target, row_bytes);
        continue;
      }
      const char* source = src + perm[b] * image_bytes + row * row_bytes;
      const int64_t start = box[1] * layout.per_x * item, stop = box[3] * layout.per_x * item;
      std::memcpy(out_row, target, start);
      std::memcpy(out_row + start, source + start, stop - start);
      std::memcpy(out_row + stop, target + stop, row_bytes - stop);
    }
  });
}

}  // namespace cpu
}  // namespace saliencymixplus

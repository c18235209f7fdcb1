// The CPU building blocks the op kernels share: summed-area tables (one map at a time, in a
// buffer that stays in cache), the window and peak searches, direct box sums for the label
// weights, the one-pass paste, and the rule for when to use more than one thread.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
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

// A map value as the tables and sums count it (saliency_value, mix_math.h) in the narrowest
// type that holds it exactly: uint8 as int32, float16/bfloat16/float32 as float32, float64 as is.
template <typename T>
inline auto counted(T v) {
  if constexpr (std::is_same_v<T, uint8_t>) {
    return static_cast<int32_t>(v);
  } else if constexpr (std::is_same_v<T, double>) {
    return saliency_value(v);
  } else {
    const float f = static_cast<float>(v);
    const bool counts = (f > 0.0f) & (f <= FLT_MAX);
    return counts ? f : 0.0f;
  }
}

// Whether every value of a float32 map counts as itself (0 <= v <= FLT_MAX: no NaN, no
// infinity; -0.0 adds as 0.0 does), so that a loop over it may skip the test of each value
// (one vectorized pass). Maps of other types: false.
template <typename T>
bool counts_as_is(const T* __restrict s, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    int as_is = 1;
    for (int64_t k = 0; k < n; ++k) {
      as_is &= (s[k] >= 0.0f) & (s[k] <= FLT_MAX);
    }
    return as_is != 0;
  } else {
    return false;
  }
}

// counted(v), or v itself where the map counts as is.
template <bool AsIs, typename T>
inline auto value_of(T v) {
  if constexpr (AsIs) {
    return v;
  } else {
    return counted(v);
  }
}

// The sum of a map's counted values as the label weights take it: float64 added in row-major
// order for float maps (exact integers for uint8, where any order gives the same).
template <typename T>
using Sum = std::conditional_t<std::is_same_v<T, uint8_t>, int64_t, double>;

// totals[b] = the sum of map b of a contiguous [B, n] array, in row-major order, for the maps
// [begin, begin + kMaps): four maps side by side (four independent chains of additions).
constexpr int64_t kMaps = 4;

template <bool AsIs, typename T>
void four_map_sums(const T* __restrict s, int64_t n, int64_t begin, double* __restrict totals) {
  Sum<T> sum[kMaps] = {};
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t m = 0; m < kMaps; ++m) {
      sum[m] += value_of<AsIs>(s[(begin + m) * n + k]);
    }
  }
  for (int64_t m = 0; m < kMaps; ++m) {
    totals[begin + m] = static_cast<double>(sum[m]);
  }
}

// The sum of each of the B maps of a contiguous [B, H, W] array, each in row-major order.
template <typename T>
std::vector<double> map_sums(const T* s, int64_t batch, int64_t plane) {
  std::vector<double> totals(batch);
  parallel_items(batch, plane, [&](int64_t begin, int64_t end) {
    int64_t b = begin;
    for (; b + kMaps <= end; b += kMaps) {
      if (counts_as_is(s + b * plane, kMaps * plane)) {
        four_map_sums<true>(s, plane, b, totals.data());
      } else {
        four_map_sums<false>(s, plane, b, totals.data());
      }
    }
    for (; b < end; ++b) {
      Sum<T> sum = 0;
      for (int64_t k = 0; k < plane; ++k) {
        sum += counted(s[b * plane + k]);
      }
      totals[b] = static_cast<double>(sum);
    }
  });
  return totals;
}

// The sums of the target's and the source's values over [y1, y2) x [x1, x2) of `box`, each in
// row-major order (so a box over the whole map gives exactly its map_sums), side by side.
template <bool AsIs, typename T>
void box_sums(const T* __restrict target, const T* __restrict source, int64_t width, const int64_t* box,
              double* in_target, double* in_source) {
  Sum<T> t = 0, s = 0;
  for (int64_t y = box[0]; y < box[2]; ++y) {
    for (int64_t x = box[1]; x < box[3]; ++x) {
      t += value_of<AsIs>(target[y * width + x]);
      s += value_of<AsIs>(source[y * width + x]);
    }
  }
  *in_target = static_cast<double>(t);
  *in_source = static_cast<double>(s);
}

// lam_i (mix_math.h) of the target map and the source map, given their totals; `box` inside the map.
template <typename T>
float weight_of(const T* target, double target_total, const T* source, double source_total, const int64_t* box,
                int64_t height, int64_t width) {
  double in_target = 0.0, in_source = 0.0;
  if (counts_as_is(target, height * width) && counts_as_is(source, height * width)) {
    box_sums<true>(target, source, width, box, &in_target, &in_source);
  } else {
    box_sums<false>(target, source, width, box, &in_target, &in_source);
  }
  return label_weight(target_total, in_target, source_total, in_source, box, height, width);
}

// sat (H + 1) x (W + 1) of the row-major H x W map s: sat[y + 1][x + 1] = sat[y][x + 1] + (row y
// summed from the left to x), four rows side by side (four chains of additions at a time).
template <bool AsIs, typename T, typename S>
void summed_area(const T* __restrict s, int64_t height, int64_t width, S* __restrict sat) {
  const int64_t stride = width + 1;
  std::fill(sat, sat + stride, S(0));
  constexpr int64_t kRows = 4;
  int64_t y = 0;
  for (; y + kRows <= height; y += kRows) {
    S sum[kRows] = {};
    for (int64_t r = 0; r < kRows; ++r) {
      sat[(y + r + 1) * stride] = S(0);
    }
    for (int64_t x = 0; x < width; ++x) {
      for (int64_t r = 0; r < kRows; ++r) {
        sum[r] += static_cast<S>(value_of<AsIs>(s[(y + r) * width + x]));
        sat[(y + r + 1) * stride + x + 1] = sat[(y + r) * stride + x + 1] + sum[r];
      }
    }
  }
  for (; y < height; ++y) {
    S sum = S(0);
    sat[(y + 1) * stride] = S(0);
    for (int64_t x = 0; x < width; ++x) {
      sum += static_cast<S>(value_of<AsIs>(s[y * width + x]));
      sat[(y + 1) * stride + x + 1] = sat[y * stride + x + 1] + sum;
    }
  }
}

// The h x w window with the largest sum in table sat, the first in row-major order on ties
// (a NaN sum, inf - inf of huge float64 values, never wins); `sums` holds W + 1 values.
template <typename S>
void best_window(const S* __restrict sat, S* __restrict sums, int64_t height, int64_t width, int64_t h, int64_t w,
                 int64_t* box) {
  const int64_t stride = width + 1, cols = width - w + 1;
  S best = std::is_floating_point_v<S> ? -std::numeric_limits<S>::infinity() : std::numeric_limits<S>::lowest();
  int64_t best_y = 0, best_x = 0;
  for (int64_t y = 0; y + h <= height; ++y) {
    const S* __restrict top = sat + y * stride;
    const S* __restrict bottom = top + h * stride;
    for (int64_t x = 0; x < cols; ++x) {  // box_sum (mix_math.h) of one row of windows
      sums[x] = bottom[x + w] - top[x + w] - bottom[x] + top[x];
    }
    for (int64_t x = 0; x < cols; ++x) {
      if (sums[x] > best) {
        best = sums[x];
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

// The window search of H x W maps of type T, with its table held for the next map (one per
// thread). Tables are exact int32 for uint8 maps whose total fits, int64 for larger uint8 maps
// (both give the boxes float64 tables give: every sum is an exact integer), float64 for float maps.
template <typename T>
class WindowFinder {
 public:
  WindowFinder(int64_t height, int64_t width) : height_(height), width_(width) {
    const int64_t cells = (height + 2) * (width + 1);  // the table, then a row of window sums
    if constexpr (std::is_same_v<T, uint8_t>) {
      if (height * width <= std::numeric_limits<int32_t>::max() / 255) {
        small_.resize(cells);
      } else {
        large_.resize(cells);
      }
    } else {
      real_.resize(cells);
    }
  }

  // box = the h x w window of `map` with the largest sum (h, w already clamped to the map).
  void find(const T* map, int64_t h, int64_t w, int64_t* box) {
    if (!small_.empty()) {
      run(map, h, w, box, small_.data());
    } else if (!large_.empty()) {
      run(map, h, w, box, large_.data());
    } else {
      run(map, h, w, box, real_.data());
    }
  }

 private:
  template <typename S>
  void run(const T* map, int64_t h, int64_t w, int64_t* box, S* table) {
    if (counts_as_is(map, height_ * width_)) {
      summed_area<true>(map, height_, width_, table);
    } else {
      summed_area<false>(map, height_, width_, table);
    }
    best_window(table, table + (height_ + 1) * (width_ + 1), height_, width_, h, w, box);
  }

  int64_t height_, width_;
  std::vector<int32_t> small_;
  std::vector<int64_t> large_;
  std::vector<double> real_;
};

// The flat index of the largest saliency value, the first on ties: the largest value first
// (counted values are never NaN, so any order finds it), then where it first occurs.
template <typename T>
int64_t argmax(const T* __restrict s, int64_t n) {
  auto best = counted(s[0]);
#pragma omp simd reduction(max : best)
  for (int64_t k = 1; k < n; ++k) {
    best = std::max(best, counted(s[k]));
  }
  for (int64_t k = 0; k < n; ++k) {
    if (counted(s[k]) == best) {
      return k;
    }
  }
  return 0;
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

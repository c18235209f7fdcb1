// Every CUDA kernel of the ops, each defined once, behind the host launchers of kernels.cuh:
// summed-area tables, the per-image window / peak search (one block per image), the window
// search of uint8 maps with the table on chip, the label weights and the paste.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAMacros.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cstdint>
#include <limits>
#include <mutex>
#include <type_traits>

#include "../mix_math.h"
#include "kernels.cuh"

namespace saliencymixplus {
namespace cuda {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t n, int64_t threads = kThreads) {
  return std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, int64_t{1} << 20));
}

// Blocks for one block per image (grid-stride over the images beyond the grid's limit).
unsigned image_blocks(int64_t batch) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(batch, std::numeric_limits<int32_t>::max())));
}

// ------------------------------------------------------------------- block reductions

// Keeps the larger value; on equal values the smaller index (the first in row-major order).
struct Best {
  double value;
  int64_t index;
  __device__ void take(double v, int64_t k) {
    if (v > value || (v == value && k < index)) {
      value = v;
      index = k;
    }
  }
};

// The best (value, index) over the block, the same in every thread.
__device__ Best block_best(Best mine) {
  __shared__ double values[kThreads];
  __shared__ int64_t indices[kThreads];
  values[threadIdx.x] = mine.value;
  indices[threadIdx.x] = mine.index;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      Best a{values[threadIdx.x], indices[threadIdx.x]};
      a.take(values[threadIdx.x + half], indices[threadIdx.x + half]);
      values[threadIdx.x] = a.value;
      indices[threadIdx.x] = a.index;
    }
    __syncthreads();
  }
  const Best best{values[0], indices[0]};
  __syncthreads();
  return best;
}

// The sum, the maximum or the minimum over the block of each thread's value, the same in every
// thread. Sums of doubles are taken in a tree, so they are exact only where every partial sum is.
struct Add {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a + b; }
};
struct Max {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a > b ? a : b; }
};
struct Min {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a < b ? a : b; }
};

template <typename V, typename Op>
__device__ V block_reduce(V mine, Op op) {
  __shared__ V values[kThreads];
  values[threadIdx.x] = mine;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      values[threadIdx.x] = op(values[threadIdx.x], values[threadIdx.x + half]);
    }
    __syncthreads();
  }
  const V total = values[0];
  __syncthreads();
  return total;
}

// ------------------------------------------------------------------ summed-area tables

// One thread per map row (grid-stride): the row's running sums in float64, left to right
// (the CPU kernel's order, so both build the same tables bit for bit), written to sat[b][y + 1].
template <typename T>
__global__ void row_sums_kernel(const T* __restrict__ s, double* __restrict__ sat, int64_t rows, int64_t height,
                                int64_t width) {
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = row / height, y = row % height;
    const T* in = s + row * width;
    double* out = sat + (b * (height + 1) + y + 1) * (width + 1);
    out[0] = 0.0;
    double sum = 0.0;
    for (int64_t x = 0; x < width; ++x) {
      sum += saliency_value(in[x]);
      out[x + 1] = sum;
    }
  }
}

// One thread per (map, column x in [0, W]): accumulates the row sums down the column.
__global__ void column_sums_kernel(double* __restrict__ sat, int64_t batch, int64_t height, int64_t width) {
  const int64_t stride = width + 1;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < batch * stride;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = k / stride, x = k % stride;
    double* column = sat + b * (height + 1) * stride + x;
    column[0] = 0.0;
    double sum = 0.0;
    for (int64_t y = 1; y <= height; ++y) {
      sum += x == 0 ? 0.0 : column[y * stride];
      column[y * stride] = sum;
    }
  }
}

// --------------------------------------------------------------------------- search

// One block per image i (grid-stride), whose source is perm[i] (i when perm is null): the box
// on the source's map, centred on its peak or the best window of its table sat.
template <typename T>
__global__ void search_kernel(const T* __restrict__ s, const double* __restrict__ sat,
                              const int64_t* __restrict__ perm, const int64_t* __restrict__ box_h,
                              const int64_t* __restrict__ box_w, int64_t batch, int64_t height, int64_t width,
                              bool peak, int64_t* __restrict__ boxes) {
  for (int64_t i = blockIdx.x; i < batch; i += gridDim.x) {
    const int64_t src = perm == nullptr ? i : source_of(perm[i], i, batch);
    const int64_t h = clamp_to(box_h[i], 0, height), w = clamp_to(box_w[i], 0, width);
    Best best{-std::numeric_limits<double>::infinity(), 0};
    int64_t cols = width;
    if (peak) {
      const T* map = s + src * height * width;
      for (int64_t k = threadIdx.x; k < height * width; k += blockDim.x) {
        best.take(saliency_value(map[k]), k);
      }
    } else {
      cols = width - w + 1;
      const double* table = sat + src * (height + 1) * (width + 1);
      for (int64_t k = threadIdx.x; k < (height - h + 1) * cols; k += blockDim.x) {
        const int64_t y = k / cols, x = k % cols;
        best.take(box_sum(table, width, y, x, y + h, x + w), k);
      }
    }
    best = block_best(best);
    if (threadIdx.x == 0) {
      int64_t* box = boxes + 4 * i;
      const int64_t y = best.index / cols, x = best.index % cols;
      if (peak) {
        peak_box(y, x, h, w, height, width, box);
      } else {
        box[0] = y;
        box[1] = x;
        box[2] = y + h;
        box[3] = x + w;
      }
    }
  }
}

// -------------------------------------------------------------------- label weights

// The lowest set bit of a positive finite double, as a power of two: v is a multiple of 2^result.
__device__ int lowest_bit(double v) {
  const auto bits = static_cast<unsigned long long>(__double_as_longlong(v));
  const int exponent = static_cast<int>((bits >> 52) & 0x7ff);
  const unsigned long long mantissa = bits & ((1ull << 52) - 1);
  if (exponent == 0) {  // subnormal
    return -1074 + __ffsll(static_cast<long long>(mantissa)) - 1;
  }
  return exponent - 1075 + __ffsll(static_cast<long long>(mantissa | (1ull << 52))) - 1;
}

// An e with v < 2^e, for v >= 0 finite.
__device__ int top_exponent(double v) {
  const int exponent = static_cast<int>((static_cast<unsigned long long>(__double_as_longlong(v)) >> 52) & 0x7ff);
  return std::max(exponent, 1) - 1022;
}

// The sums a label weight takes from one map: its total, and its sum over the box.
struct MapSums {
  double total;
  double inside;
};

// Block-wide: the sums of the target's and the source's values (total and over `box`), equal
// to the CPU kernel's, which adds float64 values in row-major order. uint8 sums are exact
// integers. A float map whose values all are multiples of 2^low and below 2^top has exact sums
// in any order when n * 2^top / 2^low <= 2^53, and then the block sums it in a tree; else one
// thread per map adds its values in row-major order (the target in thread 0, the source in 32).
template <typename T>
__device__ void block_map_sums(const T* __restrict__ target, const T* __restrict__ source, int64_t height,
                               int64_t width, const int64_t* box, int ceil_log2_plane, MapSums* out) {
  const int64_t plane = height * width;
  if constexpr (std::is_same_v<T, uint8_t>) {
    int64_t sums[4] = {0, 0, 0, 0};
    for (int64_t k = threadIdx.x; k < plane; k += blockDim.x) {
      const int64_t y = k / width, x = k - y * width;
      const bool in_box = y >= box[0] && y < box[2] && x >= box[1] && x < box[3];
      sums[0] += target[k];
      sums[1] += in_box ? target[k] : 0;
      sums[2] += source[k];
      sums[3] += in_box ? source[k] : 0;
    }
    for (int j = 0; j < 4; ++j) {
      sums[j] = block_reduce(sums[j], Add{});
    }
    out[0] = {static_cast<double>(sums[0]), static_cast<double>(sums[1])};
    out[1] = {static_cast<double>(sums[2]), static_cast<double>(sums[3])};
  } else {
    double sums[4] = {0.0, 0.0, 0.0, 0.0};
    double high[2] = {0.0, 0.0};
    int low[2] = {std::numeric_limits<int>::max(), std::numeric_limits<int>::max()};
    for (int64_t k = threadIdx.x; k < plane; k += blockDim.x) {
      const int64_t y = k / width, x = k - y * width;
      const bool in_box = y >= box[0] && y < box[2] && x >= box[1] && x < box[3];
      const double values[2] = {saliency_value(target[k]), saliency_value(source[k])};
      for (int m = 0; m < 2; ++m) {
        sums[2 * m] += values[m];
        sums[2 * m + 1] += in_box ? values[m] : 0.0;
        high[m] = values[m] > high[m] ? values[m] : high[m];
        if (values[m] > 0.0) {
          low[m] = std::min(low[m], lowest_bit(values[m]));
        }
      }
    }
    bool exact[2];
    for (int m = 0; m < 2; ++m) {
      const double top = block_reduce(high[m], Max{});
      const int bottom = block_reduce(low[m], Min{});
      exact[m] = !(top > 0.0) || top_exponent(top) + ceil_log2_plane - bottom <= DBL_MANT_DIG;
      out[m] = {block_reduce(sums[2 * m], Add{}), block_reduce(sums[2 * m + 1], Add{})};
    }
    for (int m = 0; m < 2; ++m) {
      if (!exact[m] && threadIdx.x == 32 * m) {  // in row-major order, as the CPU kernel adds
        const T* map = m == 0 ? target : source;
        double total = 0.0, inside = 0.0;
        for (int64_t y = 0; y < height; ++y) {
          const bool box_row = y >= box[0] && y < box[2];
          for (int64_t x = 0; x < width; ++x) {
            const double v = saliency_value(map[y * width + x]);
            total += v;
            if (box_row && x >= box[1] && x < box[3]) {
              inside += v;
            }
          }
        }
        out[m] = {total, inside};
      }
    }
  }
}

// One block per image i (grid-stride): lam[i] from the sums of map i and of its source's map.
template <typename T>
__global__ void label_weights_kernel(const T* __restrict__ s, const int64_t* __restrict__ perm,
                                     const int64_t* __restrict__ boxes, int64_t batch, int64_t height, int64_t width,
                                     int ceil_log2_plane, float* __restrict__ lam) {
  __shared__ MapSums sums[2];
  const int64_t plane = height * width;
  for (int64_t i = blockIdx.x; i < batch; i += gridDim.x) {
    int64_t box[4];
    clamp_box(boxes + 4 * i, height, width, box);
    const int64_t src = source_of(perm[i], i, batch);
    MapSums mine[2];
    block_map_sums(s + i * plane, s + src * plane, height, width, box, ceil_log2_plane, mine);
    if (threadIdx.x == 0) {
      sums[0] = mine[0];
    }
    if (threadIdx.x == 32) {
      sums[1] = mine[1];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      lam[i] = label_weight(sums[0].total, sums[0].inside, sums[1].total, sums[1].inside, box, height, width);
    }
    __syncthreads();
  }
}

// ------------------------------------------------------------- the table on chip (uint8)

// Window boxes (and label weights) of uint8 maps with the source's summed-area table kept
// on chip: int32 in shared memory, exact (255 * H * W < 2^31 wherever the table fits), so
// the boxes and weights equal the float64 path's. One block (kThreads threads) per image i
// (grid-stride), whose source is perm[i] (i when perm is null); lam may be null.
__global__ void window_on_chip_kernel(const uint8_t* __restrict__ s, const int64_t* __restrict__ perm,
                                      const int64_t* __restrict__ box_h, const int64_t* __restrict__ box_w,
                                      int64_t batch, int32_t height, int32_t width, int64_t* __restrict__ boxes,
                                      float* __restrict__ lam) {
  extern __shared__ int32_t sat[];  // (H + 1) x (W + 1)
  const int32_t stride = width + 1, plane = height * width;
  for (int64_t i = blockIdx.x; i < batch; i += gridDim.x) {
    const int64_t src = perm == nullptr ? i : source_of(perm[i], i, batch);
    const uint8_t* map = s + src * plane;
    for (int32_t k = threadIdx.x; k < stride; k += blockDim.x) {
      sat[k] = 0;
    }
    for (int32_t y = threadIdx.x; y < height; y += blockDim.x) {
      sat[(y + 1) * stride] = 0;
    }
    for (int32_t k = threadIdx.x; k < plane; k += blockDim.x) {  // coalesced read of the map
      const int32_t y = k / width;
      sat[(y + 1) * stride + k - y * width + 1] = map[k];
    }
    __syncthreads();
    for (int32_t y = threadIdx.x; y < height; y += blockDim.x) {  // rows, then columns
      int32_t* row = sat + (y + 1) * stride;
      int32_t sum = 0;
      for (int32_t x = 1; x <= width; ++x) {
        sum += row[x];
        row[x] = sum;
      }
    }
    __syncthreads();
    for (int32_t x = threadIdx.x + 1; x <= width; x += blockDim.x) {
      int32_t sum = 0;
      for (int32_t y = 1; y <= height; ++y) {
        sum += sat[y * stride + x];
        sat[y * stride + x] = sum;
      }
    }
    __syncthreads();
    const int32_t h = static_cast<int32_t>(clamp_to(box_h[i], 0, height));
    const int32_t w = static_cast<int32_t>(clamp_to(box_w[i], 0, width));
    const int32_t cols = width - w + 1, positions = (height - h + 1) * cols;
    Best best{-std::numeric_limits<double>::infinity(), 0};
    for (int32_t k = threadIdx.x; k < positions; k += blockDim.x) {
      const int32_t y = k / cols, x = k - y * cols;
      best.take(static_cast<double>(box_sum(sat, width, y, x, y + h, x + w)), k);
    }
    best = block_best(best);
    const int64_t box[4] = {best.index / cols, best.index % cols, best.index / cols + h, best.index % cols + w};
    int64_t total = 0, inside = 0;
    if (lam != nullptr) {  // the target's sums, exact in int64
      const uint8_t* target = s + i * plane;
      for (int32_t k = threadIdx.x; k < plane; k += blockDim.x) {
        const int32_t y = k / width, x = k - y * width;
        const int32_t v = target[k];
        total += v;
        inside += (y >= box[0] && y < box[2] && x >= box[1] && x < box[3]) ? v : 0;
      }
      total = block_reduce(total, Add{});
      inside = block_reduce(inside, Add{});
    }
    if (threadIdx.x == 0) {
      for (int k = 0; k < 4; ++k) {
        boxes[4 * i + k] = box[k];
      }
      if (lam != nullptr) {
        const int32_t source_total = sat[height * stride + width];
        const int32_t source_inside = box_sum(sat, width, box[0], box[1], box[2], box[3]);
        lam[i] = label_weight(static_cast<double>(total), static_cast<double>(inside),
                              static_cast<double>(source_total), static_cast<double>(source_inside), box, height,
                              width);
      }
    }
    __syncthreads();  // the table is rebuilt for the next image
  }
}

// The shared memory window_on_chip_kernel needs for H x W maps.
int64_t on_chip_bytes(int64_t height, int64_t width) {
  return (height + 1) * (width + 1) * static_cast<int64_t>(sizeof(int32_t));
}

// The dynamic shared memory window_on_chip_kernel may take on the current device: the device's
// opt-in limit less the kernel's static shared memory, both asked of the runtime, and granted
// to the kernel once per device and process. Never asked during a CUDA-graph capture of the
// current stream (0 until then: the tables go to global memory), and asked in the relaxed
// capture mode, so that another thread's capture does not forbid the calls.
int64_t on_chip_limit() {
  struct Budget {
    std::atomic<int64_t> bytes{-1};
    std::mutex mutex;
  };
  static Budget budgets[C10_COMPILE_TIME_MAX_GPUS];
  const c10::DeviceIndex device = c10::cuda::current_device();
  Budget& budget = budgets[device];
  int64_t bytes = budget.bytes.load(std::memory_order_acquire);
  if (bytes >= 0) {
    return bytes;
  }
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) {
    return 0;
  }
  const std::lock_guard<std::mutex> lock(budget.mutex);
  bytes = budget.bytes.load(std::memory_order_acquire);
  if (bytes < 0) {
    const c10::cuda::CUDAStreamCaptureModeGuard relaxed(cudaStreamCaptureModeRelaxed);
    int optin = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    cudaFuncAttributes attributes{};
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, window_on_chip_kernel));
    bytes = std::max<int64_t>(0, static_cast<int64_t>(optin) - static_cast<int64_t>(attributes.sharedSizeBytes));
    C10_CUDA_CHECK(cudaFuncSetAttribute(window_on_chip_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
    budget.bytes.store(bytes, std::memory_order_release);
  }
  return bytes;
}

// ----------------------------------------------------------------------------- paste

// Paste in one pass over the bytes: every granule of G bytes (16, 8, 4, 2 or 1; the
// largest that divides a row and the base addresses) of out[b] is read from image b, or
// from its source inside the box, and written once. The box's part of a row is the byte
// range [x1 * per_x_bytes, x2 * per_x_bytes) in both layouts; a granule across its edge is
// blended byte by byte. Grid: x over the granules of one image, y over the images. I, the
// type of a granule's index in its image (row, place in the row), is int32_t where an image
// has at most 2^31 - 1 granules (so its rows and height fit too), else int64_t.
template <typename G, typename I>
__global__ void paste_kernel(const char* __restrict__ in, char* __restrict__ out, const int64_t* __restrict__ perm,
                             const int64_t* __restrict__ boxes, int64_t batch, int64_t rows, int64_t height,
                             int64_t width, int64_t row_granules, int64_t row_bytes, int64_t per_x_bytes) {
  constexpr int64_t kBytes = sizeof(G);
  const int64_t image_bytes = rows * row_bytes;
  const int64_t granules = rows * row_granules;
  const I per_row = static_cast<I>(row_granules), image_height = static_cast<I>(height);
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    int64_t box[4];
    clamp_box(boxes + 4 * b, height, width, box);
    const int64_t lo = box[1] * per_x_bytes, hi = box[3] * per_x_bytes;
    const char* self = in + b * image_bytes;
    const char* other = in + source_of(perm[b], b, batch) * image_bytes;
    char* to = out + b * image_bytes;
    for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < granules;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const I index = static_cast<I>(k);  // k < granules: fits I
      const I row = index / per_row;
      const int64_t start = static_cast<int64_t>(index - row * per_row) * kBytes;  // in the row
      const int64_t offset = static_cast<int64_t>(row) * row_bytes + start;
      const I y = row % image_height;
      const bool box_row = y >= box[0] && y < box[2];
      G value;
      if (!box_row || start + kBytes <= lo || start >= hi) {
        value = *reinterpret_cast<const G*>(self + offset);
      } else if (start >= lo && start + kBytes <= hi) {
        value = *reinterpret_cast<const G*>(other + offset);
      } else {
        value = *reinterpret_cast<const G*>(self + offset);
        const G pasted = *reinterpret_cast<const G*>(other + offset);
        char* v = reinterpret_cast<char*>(&value);
        const char* p = reinterpret_cast<const char*>(&pasted);
#pragma unroll
        for (int32_t j = 0; j < kBytes; ++j) {
          if (start + j >= lo && start + j < hi) {
            v[j] = p[j];
          }
        }
      }
      *reinterpret_cast<G*>(to + offset) = value;
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------- launchers

at::Tensor summed_area_tables(const at::Tensor& saliency) {
  const int64_t batch = saliency.size(0), height = saliency.size(1), width = saliency.size(2);
  at::Tensor sat = at::empty({batch, height + 1, width + 1}, saliency.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t rows = batch * height;
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, saliency.scalar_type(), "row_sums", [&] {
    row_sums_kernel<scalar_t><<<blocks_for(rows), kThreads, 0, stream>>>(
        saliency.const_data_ptr<scalar_t>(), sat.data_ptr<double>(), rows, height, width);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  column_sums_kernel<<<blocks_for(batch * (width + 1)), kThreads, 0, stream>>>(
      sat.data_ptr<double>(), batch, height, width);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return sat;
}

void search(const at::Tensor& saliency, const at::Tensor& sat, const at::Tensor& perm, const at::Tensor& box_h,
            const at::Tensor& box_w, bool peak, at::Tensor& boxes) {
  const int64_t batch = saliency.size(0), height = saliency.size(1), width = saliency.size(2);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, saliency.scalar_type(), "search", [&] {
    search_kernel<scalar_t><<<image_blocks(batch), kThreads, 0, stream>>>(
        saliency.const_data_ptr<scalar_t>(), sat.defined() ? sat.const_data_ptr<double>() : nullptr,
        perm.defined() ? perm.const_data_ptr<int64_t>() : nullptr, box_h.const_data_ptr<int64_t>(),
        box_w.const_data_ptr<int64_t>(), batch, height, width, peak, boxes.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

bool window_fits_on_chip(const at::Tensor& saliency) {
  return saliency.scalar_type() == at::kByte && on_chip_bytes(saliency.size(1), saliency.size(2)) <= on_chip_limit();
}

void window_on_chip(const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& box_h,
                    const at::Tensor& box_w, at::Tensor& boxes, const at::Tensor& lam) {
  const int64_t batch = saliency.size(0), height = saliency.size(1), width = saliency.size(2);
  window_on_chip_kernel<<<image_blocks(batch), kThreads, on_chip_bytes(height, width),
                          c10::cuda::getCurrentCUDAStream()>>>(
      saliency.const_data_ptr<uint8_t>(), perm.defined() ? perm.const_data_ptr<int64_t>() : nullptr,
      box_h.const_data_ptr<int64_t>(), box_w.const_data_ptr<int64_t>(), batch, static_cast<int32_t>(height),
      static_cast<int32_t>(width), boxes.data_ptr<int64_t>(), lam.defined() ? lam.data_ptr<float>() : nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void label_weights(const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& boxes, at::Tensor& lam) {
  const int64_t batch = saliency.size(0), height = saliency.size(1), width = saliency.size(2);
  int ceil_log2_plane = 0;
  while ((int64_t{1} << ceil_log2_plane) < height * width) {
    ++ceil_log2_plane;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, saliency.scalar_type(), "label_weights", [&] {
    label_weights_kernel<scalar_t><<<image_blocks(batch), kThreads, 0, stream>>>(
        saliency.const_data_ptr<scalar_t>(), perm.const_data_ptr<int64_t>(), boxes.const_data_ptr<int64_t>(), batch,
        height, width, ceil_log2_plane, lam.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void paste(const at::Tensor& in, at::Tensor& out, const at::Tensor& perm, const at::Tensor& boxes,
           at::MemoryFormat format) {
  const int64_t batch = in.size(0), channels = in.size(1), height = in.size(2), width = in.size(3);
  const bool last = format == at::MemoryFormat::ChannelsLast;
  const int64_t item = in.element_size();
  const int64_t rows = last ? height : channels * height;
  const int64_t row_bytes = (last ? width * channels : width) * item;
  const int64_t per_x_bytes = (last ? channels : 1) * item;
  const auto in_address = reinterpret_cast<uintptr_t>(in.const_data_ptr());
  const auto out_address = reinterpret_cast<uintptr_t>(out.data_ptr());
  int64_t granule = 16;
  while (granule > 1 && (row_bytes % granule || in_address % granule || out_address % granule)) {
    granule /= 2;
  }
  const int64_t row_granules = row_bytes / granule, granules = rows * row_granules;
  // An image's rows and height are at most its granules: int32 indices where those fit.
  const bool narrow = granules <= std::numeric_limits<int32_t>::max();
  const dim3 grid(static_cast<unsigned>(blocks_for(granules)), static_cast<unsigned>(std::min<int64_t>(batch, 65535)));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto launch = [&](auto tag) {
    using G = decltype(tag);
    auto kernel = narrow ? paste_kernel<G, int32_t> : paste_kernel<G, int64_t>;
    kernel<<<grid, kThreads, 0, stream>>>(static_cast<const char*>(in.const_data_ptr()),
                                          static_cast<char*>(out.data_ptr()), perm.const_data_ptr<int64_t>(),
                                          boxes.const_data_ptr<int64_t>(), batch, rows, height, width, row_granules,
                                          row_bytes, per_x_bytes);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  switch (granule) {
    case 16: launch(uint4{}); break;
    case 8: launch(uint2{}); break;
    case 4: launch(uint32_t{}); break;
    case 2: launch(uint16_t{}); break;
    default: launch(uint8_t{}); break;
  }
}

}  // namespace cuda
}  // namespace saliencymixplus

// The CUDA building blocks the op kernels share: summed-area tables, the per-image window /
// peak search (one block per image) and the paste (one thread per output element).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <limits>

#include "../mix_math.h"
#include "../paste_layout.h"

namespace saliencymixplus {
namespace cuda {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t n, int64_t threads = kThreads) {
  return std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, int64_t{1} << 20));
}

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
      sum += static_cast<double>(in[x]);
      out[x + 1] = sum;
    }
  }
}

// One thread per (map, column x in [0, W]): accumulates the row sums down the column.
__global__ inline void column_sums_kernel(double* __restrict__ sat, int64_t batch, int64_t height, int64_t width) {
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

// Summed-area tables of a contiguous Tensor[B, H, W] -> double Tensor[B, H+1, W+1].
inline at::Tensor summed_area_tables(const at::Tensor& saliency) {
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

// The best (value, index) over the block, valid in thread 0.
__device__ inline Best block_best(Best mine) {
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
  return Best{values[0], indices[0]};
}

// One block (kThreads threads) per image i, whose source is perm[i] (i when perm is null):
// finds the box on the source's map (peak of s, or best window of sat) and, when lam is not
// null, the label weight from the target's and the source's tables.
template <typename T>
__global__ void search_kernel(const T* __restrict__ s, const double* __restrict__ sat,
                              const int64_t* __restrict__ perm, const int64_t* __restrict__ box_h,
                              const int64_t* __restrict__ box_w, int64_t height, int64_t width, bool peak,
                              int64_t* __restrict__ boxes, float* __restrict__ lam) {
  const int64_t i = blockIdx.x;
  const int64_t src = perm == nullptr ? i : perm[i];
  const int64_t h = clamp_to(box_h[i], 0, height), w = clamp_to(box_w[i], 0, width);
  Best best{-std::numeric_limits<double>::infinity(), 0};
  int64_t cols = width;
  if (peak) {
    const T* map = s + src * height * width;
    for (int64_t k = threadIdx.x; k < height * width; k += blockDim.x) {
      best.take(static_cast<double>(map[k]), k);
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
  if (threadIdx.x != 0) {
    return;
  }
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
  if (lam != nullptr) {
    const int64_t plane = (height + 1) * (width + 1);
    const double* target = sat + i * plane;
    const double* source = sat + src * plane;
    lam[i] = label_weight(target[plane - 1], box_sum(target, width, box[0], box[1], box[2], box[3]),
                          source[plane - 1], box_sum(source, width, box[0], box[1], box[2], box[3]), box, height,
                          width);
  }
}

// Launches search_kernel over a contiguous saliency; sat may be undefined for peak boxes
// without weights, perm undefined for "each map is its own source".
inline void search(const at::Tensor& saliency, const at::Tensor& sat, const at::Tensor& perm, const at::Tensor& box_h,
                   const at::Tensor& box_w, bool peak, at::Tensor& boxes, float* lam) {
  const int64_t batch = saliency.size(0), height = saliency.size(1), width = saliency.size(2);
  TORCH_CHECK_VALUE(batch <= std::numeric_limits<int32_t>::max(), "saliency must hold fewer than 2^31 maps, got ", batch);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, saliency.scalar_type(), "search", [&] {
    search_kernel<scalar_t><<<batch, kThreads, 0, stream>>>(
        saliency.const_data_ptr<scalar_t>(), sat.defined() ? sat.const_data_ptr<double>() : nullptr,
        perm.defined() ? perm.const_data_ptr<int64_t>() : nullptr, box_h.const_data_ptr<int64_t>(),
        box_w.const_data_ptr<int64_t>(), height, width, peak, boxes.data_ptr<int64_t>(), lam);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// One thread per output element, in memory order of the (NCHW or NHWC contiguous) layout:
// copies from image perm[b] inside box b and from image b outside. E is the element's
// storage type of the same size, so every dtype works.
template <typename E>
__global__ void paste_kernel(const E* __restrict__ in, E* __restrict__ out, const int64_t* __restrict__ perm,
                             const int64_t* __restrict__ boxes, int64_t total, int64_t per_image, int64_t row_length,
                             int64_t height, int64_t per_x) {
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = k / per_image, offset = k - b * per_image;
    const int64_t row = offset / row_length;
    const int64_t y = row % height, x = (offset - row * row_length) / per_x;
    const int64_t* box = boxes + 4 * b;
    const bool inside = y >= box[0] && y < box[2] && x >= box[1] && x < box[3];
    out[k] = in[(inside ? perm[b] : b) * per_image + offset];
  }
}

// out = paste of `in` (contiguous in `format`, like out) with perm and boxes on the device.
inline void paste(const at::Tensor& in, at::Tensor& out, const at::Tensor& perm, const at::Tensor& boxes,
                  at::MemoryFormat format) {
  const int64_t channels = in.size(1), height = in.size(2), width = in.size(3);
  const bool last = format == at::MemoryFormat::ChannelsLast;
  const int64_t row_length = last ? width * channels : width, per_x = last ? channels : 1;
  const int64_t per_image = channels * height * width, total = in.numel();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto launch = [&](auto tag) {
    using E = decltype(tag);
    paste_kernel<E><<<blocks_for(total), kThreads, 0, stream>>>(
        static_cast<const E*>(in.const_data_ptr()), static_cast<E*>(out.data_ptr()), perm.const_data_ptr<int64_t>(),
        boxes.const_data_ptr<int64_t>(), total, per_image, row_length, height, per_x);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  switch (in.element_size()) {
    case 1: launch(uint8_t{}); break;
    case 2: launch(uint16_t{}); break;
    case 4: launch(uint32_t{}); break;
    case 8: launch(uint64_t{}); break;
    case 16: launch(double2{}); break;
    default: TORCH_CHECK_VALUE(false, "images has an element size of ", in.element_size(), " bytes, not supported");
  }
}

}  // namespace cuda
}  // namespace saliencymixplus

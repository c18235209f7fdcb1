#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "kernels.cuh"

namespace saliencymixplus {
namespace {

// One thread per image (grid-stride): the weight from the target's and the source's summed-area tables.
__global__ void label_weights_kernel(const double* __restrict__ sat, const int64_t* __restrict__ perm,
                                     const int64_t* __restrict__ boxes, int64_t batch, int64_t height, int64_t width,
                                     float* __restrict__ lam) {
  const int64_t plane = (height + 1) * (width + 1);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < batch;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t box[4];
    clamp_box(boxes + 4 * i, height, width, box);
    const double* target = sat + i * plane;
    const double* source = sat + source_of(perm[i], i, batch) * plane;
    lam[i] = label_weight(target[plane - 1], box_sum(target, width, box[0], box[1], box[2], box[3]),
                          source[plane - 1], box_sum(source, width, box[0], box[1], box[2], box[3]), box, height,
                          width);
  }
}

at::Tensor label_weights_cuda(const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& boxes) {
  check_label_weights_args(saliency, perm, boxes);
  TORCH_CHECK(saliency.is_cuda(), "saliency must be a CUDA tensor, got ", saliency.device());
  const int64_t batch = saliency.size(0), height = saliency.size(1), width = saliency.size(2);
  const c10::cuda::CUDAGuard guard(saliency.device());
  at::Tensor lam = at::empty({batch}, saliency.options().dtype(at::kFloat));
  if (batch == 0) {
    return lam;
  }
  const at::Tensor s = saliency.contiguous();
  const at::Tensor sat = cuda::summed_area_tables(s);
  const at::Tensor p = perm.contiguous(), b = boxes.contiguous();
  label_weights_kernel<<<cuda::blocks_for(batch), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      sat.const_data_ptr<double>(), p.const_data_ptr<int64_t>(), b.const_data_ptr<int64_t>(), batch, height, width,
      lam.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return lam;
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CUDA, m) {
  m.impl("label_weights", &label_weights_cuda);
}

}  // namespace saliencymixplus

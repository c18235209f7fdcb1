#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "kernels.cuh"

namespace saliencymixplus {
namespace {

at::Tensor peak_boxes_cuda(const at::Tensor& saliency, const at::Tensor& box_h, const at::Tensor& box_w) {
  check_search_args(saliency, box_h, box_w);
  TORCH_CHECK(saliency.is_cuda(), "saliency must be a CUDA tensor, got ", saliency.device());
  const int64_t batch = saliency.size(0);
  const c10::cuda::CUDAGuard guard(saliency.device());
  at::Tensor boxes = at::empty({batch, 4}, saliency.options().dtype(at::kLong));
  if (batch == 0) {
    return boxes;
  }
  const at::Tensor s = saliency.contiguous();
  cuda::search(s, at::Tensor(), at::Tensor(), box_h.contiguous(), box_w.contiguous(), /*peak=*/true, boxes);
  return boxes;
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CUDA, m) {
  m.impl("peak_boxes", &peak_boxes_cuda);
}

}  // namespace saliencymixplus

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "kernels.cuh"

namespace saliencymixplus {
namespace {

at::Tensor window_search_cuda(const at::Tensor& saliency, const at::Tensor& box_h, const at::Tensor& box_w) {
  check_search_args(saliency, box_h, box_w);
  TORCH_CHECK(saliency.is_cuda(), "saliency must be a CUDA tensor, got ", saliency.device());
  const int64_t batch = saliency.size(0);
  const c10::cuda::CUDAGuard guard(saliency.device());
  at::Tensor boxes = at::empty({batch, 4}, saliency.options().dtype(at::kLong));
  if (batch == 0) {
    return boxes;
  }
  const at::Tensor s = saliency.contiguous();
  if (cuda::window_fits_on_chip(s)) {
    cuda::window_on_chip(s, at::Tensor(), box_h.contiguous(), box_w.contiguous(), boxes, at::Tensor());
    return boxes;
  }
  const at::Tensor sat = cuda::summed_area_tables(s);
  cuda::search(s, sat, at::Tensor(), box_h.contiguous(), box_w.contiguous(), /*peak=*/false, boxes);
  return boxes;
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CUDA, m) {
  m.impl("window_search", &window_search_cuda);
}

}  // namespace saliencymixplus

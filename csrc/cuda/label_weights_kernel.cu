#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "kernels.cuh"

namespace saliencymixplus {
namespace {

at::Tensor label_weights_cuda(const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& boxes) {
  check_label_weights_args(saliency, perm, boxes);
  TORCH_CHECK(saliency.is_cuda(), "saliency must be a CUDA tensor, got ", saliency.device());
  const c10::cuda::CUDAGuard guard(saliency.device());
  at::Tensor lam = at::empty({saliency.size(0)}, saliency.options().dtype(at::kFloat));
  if (saliency.size(0) == 0) {
    return lam;
  }
  cuda::label_weights(saliency.contiguous(), perm.contiguous(), boxes.contiguous(), lam);
  return lam;
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CUDA, m) {
  m.impl("label_weights", &label_weights_cuda);
}

}  // namespace saliencymixplus

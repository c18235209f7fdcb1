#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "../paste_layout.h"
#include "kernels.cuh"

namespace saliencymixplus {
namespace {

at::Tensor paste_cuda(const at::Tensor& images, const at::Tensor& perm, const at::Tensor& boxes) {
  check_paste_args(images, perm, boxes);
  TORCH_CHECK(images.is_cuda(), "images must be a CUDA tensor, got ", images.device());
  const c10::cuda::CUDAGuard guard(images.device());
  const at::MemoryFormat format = paste_format(images);
  const at::Tensor in = images.contiguous(format);
  at::Tensor out = at::empty_like(in, in.options(), format);
  if (in.numel() == 0) {
    return out;
  }
  cuda::paste(in, out, perm.contiguous(), boxes.contiguous(), format);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CUDA, m) {
  m.impl("paste", &paste_cuda);
}

}  // namespace saliencymixplus

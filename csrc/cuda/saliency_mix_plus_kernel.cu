#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../checks.h"
#include "../paste_layout.h"
#include "kernels.cuh"

namespace saliencymixplus {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> saliency_mix_plus_cuda(
    const at::Tensor& images, const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& box_h,
    const at::Tensor& box_w, c10::string_view box) {
  check_saliency_mix_plus_args(images, saliency, perm, box_h, box_w, box);
  TORCH_CHECK(images.is_cuda(), "images must be a CUDA tensor, got ", images.device());
  const int64_t batch = images.size(0), height = images.size(2), width = images.size(3);
  const c10::cuda::CUDAGuard guard(images.device());

  const at::MemoryFormat format = paste_format(images);
  const at::Tensor in = images.contiguous(format);
  at::Tensor mixed = at::empty_like(in, in.options(), format);
  at::Tensor boxes = at::empty({batch, 4}, images.options().dtype(at::kLong));
  at::Tensor lam = at::empty({batch}, images.options().dtype(at::kFloat));
  if (batch == 0) {
    return {mixed, boxes, lam};
  }
  const at::Tensor s = saliency.contiguous();
  const at::Tensor p = perm.contiguous();
  if (box == "window" && cuda::window_fits_on_chip(s)) {
    cuda::window_on_chip(s, p, box_h.contiguous(), box_w.contiguous(), boxes, lam);
  } else {
    const bool peak = box == "peak";
    const at::Tensor sat = peak ? at::Tensor() : cuda::summed_area_tables(s);
    cuda::search(s, sat, p, box_h.contiguous(), box_w.contiguous(), peak, boxes);
    cuda::label_weights(s, p, boxes, lam);
  }
  if (in.numel() > 0) {
    cuda::paste(in, mixed, p, boxes, format);
  }
  return {mixed, boxes, lam};
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CUDA, m) {
  m.impl("saliency_mix_plus", &saliency_mix_plus_cuda);
}

}  // namespace saliencymixplus

#include <torch/library.h>

#include "../checks.h"
#include "kernels.h"

namespace saliencymixplus {
namespace {

at::Tensor paste_cpu(const at::Tensor& images, const at::Tensor& perm, const at::Tensor& boxes) {
  check_paste_args(images, perm, boxes);
  TORCH_CHECK(images.device().is_cpu(), "images must be a CPU tensor, got ", images.device());
  const at::MemoryFormat format = paste_format(images);
  const at::Tensor in = images.contiguous(format);
  if (in.numel() == 0) {
    return at::empty_like(in, in.options(), format);
  }
  at::Tensor out = at::empty_like(in, in.options(), format);
  const at::Tensor p = perm.contiguous(), b = boxes.contiguous();
  cpu::paste_images(in, out, p.const_data_ptr<int64_t>(), b.const_data_ptr<int64_t>(), format);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CPU, m) {
  m.impl("paste", &paste_cpu);
}

}  // namespace saliencymixplus

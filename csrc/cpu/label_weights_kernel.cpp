#include <torch/library.h>

#include "../checks.h"
#include "kernels.h"

namespace saliencymixplus {
namespace {

at::Tensor label_weights_cpu(const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& boxes) {
  check_label_weights_args(saliency, perm, boxes);
  TORCH_CHECK(saliency.device().is_cpu(), "saliency must be a CPU tensor, got ", saliency.device());
  const int64_t batch = saliency.size(0), height = saliency.size(1), width = saliency.size(2);
  at::Tensor lam = at::empty({batch}, saliency.options().dtype(at::kFloat));
  if (batch == 0) {
    return lam;
  }
  const at::Tensor s = saliency.contiguous();
  check_values(s, perm, boxes, height, width);
  const at::Tensor sat = cpu::summed_area_tables(s);
  const at::Tensor ps = perm.contiguous(), bs = boxes.contiguous();
  const int64_t* p = ps.const_data_ptr<int64_t>();
  const int64_t* box = bs.const_data_ptr<int64_t>();
  const double* t = sat.const_data_ptr<double>();
  float* out = lam.data_ptr<float>();
  const int64_t plane = (height + 1) * (width + 1);
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t* bx = box + 4 * i;
    const double* target = t + i * plane;
    const double* source = t + p[i] * plane;
    out[i] = label_weight(
        target[plane - 1], box_sum(target, width, bx[0], bx[1], bx[2], bx[3]), source[plane - 1],
        box_sum(source, width, bx[0], bx[1], bx[2], bx[3]), bx, height, width);
  }
  return lam;
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CPU, m) {
  m.impl("label_weights", &label_weights_cpu);
}

}  // namespace saliencymixplus

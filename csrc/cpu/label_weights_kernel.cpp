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
  const at::Tensor ps = perm.contiguous(), bs = boxes.contiguous();
  const int64_t* p = ps.const_data_ptr<int64_t>();
  const int64_t* box = bs.const_data_ptr<int64_t>();
  float* out = lam.data_ptr<float>();
  const int64_t plane = height * width;
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, s.scalar_type(), "label_weights_cpu", [&] {
    const scalar_t* data = s.const_data_ptr<scalar_t>();
    const std::vector<double> totals = cpu::map_sums(data, batch, plane);
    cpu::parallel_items(batch, plane, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t src = source_of(p[i], i, batch);
        int64_t bx[4];
        clamp_box(box + 4 * i, height, width, bx);
        out[i] = cpu::weight_of(data + i * plane, totals[i], data + src * plane, totals[src], bx, height, width);
      }
    });
  });
  return lam;
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CPU, m) {
  m.impl("label_weights", &label_weights_cpu);
}

}  // namespace saliencymixplus

#include <torch/library.h>

#include "../checks.h"
#include "kernels.h"

namespace saliencymixplus {
namespace {

at::Tensor window_search_cpu(const at::Tensor& saliency, const at::Tensor& box_h, const at::Tensor& box_w) {
  check_search_args(saliency, box_h, box_w);
  TORCH_CHECK(saliency.device().is_cpu(), "saliency must be a CPU tensor, got ", saliency.device());
  const int64_t batch = saliency.size(0), height = saliency.size(1), width = saliency.size(2);
  at::Tensor boxes = at::empty({batch, 4}, saliency.options().dtype(at::kLong));
  if (batch == 0) {
    return boxes;
  }
  const at::Tensor s = saliency.contiguous();
  const at::Tensor hs = box_h.contiguous(), ws = box_w.contiguous();
  const int64_t* h = hs.const_data_ptr<int64_t>();
  const int64_t* w = ws.const_data_ptr<int64_t>();
  int64_t* out = boxes.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, s.scalar_type(), "window_search_cpu", [&] {
    const scalar_t* data = s.const_data_ptr<scalar_t>();
    cpu::parallel_items(batch, 2 * height * width, [&](int64_t begin, int64_t end) {
      cpu::WindowFinder<scalar_t> finder(height, width);
      for (int64_t b = begin; b < end; ++b) {
        finder.find(data + b * height * width, clamp_to(h[b], 0, height), clamp_to(w[b], 0, width), out + 4 * b);
      }
    });
  });
  return boxes;
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CPU, m) {
  m.impl("window_search", &window_search_cpu);
}

}  // namespace saliencymixplus

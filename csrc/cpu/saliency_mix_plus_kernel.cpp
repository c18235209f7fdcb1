#include <torch/library.h>

#include <string_view>
#include <tuple>

#include "../checks.h"
#include "kernels.h"

namespace saliencymixplus {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> saliency_mix_plus_cpu(
    const at::Tensor& images, const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& box_h,
    const at::Tensor& box_w, c10::string_view box) {
  check_saliency_mix_plus_args(images, saliency, perm, box_h, box_w, box);
  TORCH_CHECK(images.device().is_cpu(), "images must be a CPU tensor, got ", images.device());
  const int64_t batch = images.size(0), height = images.size(2), width = images.size(3);

  const at::MemoryFormat format = paste_format(images);
  const at::Tensor in = images.contiguous(format);
  at::Tensor mixed = at::empty_like(in, in.options(), format);
  at::Tensor boxes = at::empty({batch, 4}, images.options().dtype(at::kLong));
  at::Tensor lam = at::empty({batch}, images.options().dtype(at::kFloat));
  if (batch == 0) {
    return {mixed, boxes, lam};
  }
  const at::Tensor s = saliency.contiguous();

  const at::Tensor ps = perm.contiguous(), hs = box_h.contiguous(), ws = box_w.contiguous();
  const int64_t* p = ps.const_data_ptr<int64_t>();
  const int64_t* h = hs.const_data_ptr<int64_t>();
  const int64_t* w = ws.const_data_ptr<int64_t>();
  int64_t* out_boxes = boxes.data_ptr<int64_t>();
  float* out_lam = lam.data_ptr<float>();
  const int64_t plane = height * width;
  const bool peak = box == "peak";

  const auto type = s.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, type, "saliency_mix_plus_cpu", [&] {
    const scalar_t* data = s.const_data_ptr<scalar_t>();
    const std::vector<double> totals = cpu::map_sums(data, batch, plane);
    cpu::parallel_items(batch, 3 * plane, [&](int64_t begin, int64_t end) {
      cpu::WindowFinder<scalar_t> finder(peak ? 0 : height, peak ? 0 : width);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t src = source_of(p[i], i, batch);
        const int64_t bh = clamp_to(h[i], 0, height), bw = clamp_to(w[i], 0, width);
        int64_t* bx = out_boxes + 4 * i;
        if (peak) {
          const int64_t at_peak = cpu::argmax(data + src * plane, plane);
          peak_box(at_peak / width, at_peak % width, bh, bw, height, width, bx);
        } else {
          finder.find(data + src * plane, bh, bw, bx);
        }
        out_lam[i] = cpu::weight_of(data + i * plane, totals[i], data + src * plane, totals[src], bx, height, width);
      }
    });
  });
  if (in.numel() > 0) {
    cpu::paste_images(in, mixed, p, out_boxes, format);
  }
  return {mixed, boxes, lam};
}

}  // namespace

TORCH_LIBRARY_IMPL(saliencymixplus, CPU, m) {
  m.impl("saliency_mix_plus", &saliency_mix_plus_cpu);
}

}  // namespace saliencymixplus

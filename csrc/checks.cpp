#include "checks.h"

#include <ATen/ATen.h>

#include <cmath>

#include <vector>

namespace saliencymixplus {

void check_saliency(const at::Tensor& saliency) {
  TORCH_CHECK_VALUE(
      saliency.dim() == 3, "saliency must be a Tensor[B, H, W], got shape ", saliency.sizes());
  const at::ScalarType type = saliency.scalar_type();
  TORCH_CHECK_VALUE(
      type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16 || type == at::kByte,
      "saliency must be a float32, float64, float16, bfloat16 or uint8 tensor, got ", type);
  TORCH_CHECK_VALUE(
      saliency.size(1) > 0 && saliency.size(2) > 0,
      "saliency must have H > 0 and W > 0, got shape ", saliency.sizes());
}

void check_images(const at::Tensor& images) {
  TORCH_CHECK_VALUE(images.dim() == 4, "images must be a Tensor[B, C, H, W], got shape ", images.sizes());
}

void check_images_match(const at::Tensor& images, const at::Tensor& saliency) {
  TORCH_CHECK_VALUE(
      saliency.device() == images.device(), "saliency must be on ", images.device(),
      " like images, got ", saliency.device());
  TORCH_CHECK_VALUE(
      saliency.size(0) == images.size(0) && saliency.size(1) == images.size(2) &&
          saliency.size(2) == images.size(3),
      "saliency must be a Tensor[B, H, W] = [", images.size(0), ", ", images.size(2), ", ", images.size(3),
      "] to match images ", images.sizes(), ", got ", saliency.sizes());
}

void check_box_sizes(const at::Tensor& size, const char* name, int64_t batch, const at::Device& device) {
  TORCH_CHECK_VALUE(
      size.scalar_type() == at::kLong && size.dim() == 1 && size.size(0) == batch, name,
      " must be an int64 Tensor[", batch, "], got ", size.scalar_type(), " of shape ", size.sizes());
  TORCH_CHECK_VALUE(size.device() == device, name, " must be on ", device, ", got ", size.device());
}

void check_perm(const at::Tensor& perm, int64_t batch, const at::Device& device) {
  TORCH_CHECK_VALUE(
      perm.scalar_type() == at::kLong && perm.dim() == 1 && perm.size(0) == batch,
      "perm must be an int64 Tensor[", batch, "], got ", perm.scalar_type(), " of shape ", perm.sizes());
  TORCH_CHECK_VALUE(perm.device() == device, "perm must be on ", device, ", got ", perm.device());
}

void check_boxes(const at::Tensor& boxes, int64_t batch, const at::Device& device) {
  TORCH_CHECK_VALUE(
      boxes.scalar_type() == at::kLong && boxes.dim() == 2 && boxes.size(0) == batch && boxes.size(1) == 4,
      "boxes must be an int64 Tensor[", batch, ", 4], got ", boxes.scalar_type(), " of shape ", boxes.sizes());
  TORCH_CHECK_VALUE(boxes.device() == device, "boxes must be on ", device, ", got ", boxes.device());
}

void check_search_args(const at::Tensor& saliency, const at::Tensor& box_h, const at::Tensor& box_w) {
  check_saliency(saliency);
  check_box_sizes(box_h, "box_h", saliency.size(0), saliency.device());
  check_box_sizes(box_w, "box_w", saliency.size(0), saliency.device());
}

void check_paste_args(const at::Tensor& images, const at::Tensor& perm, const at::Tensor& boxes) {
  check_images(images);
  check_perm(perm, images.size(0), images.device());
  check_boxes(boxes, images.size(0), images.device());
}

void check_label_weights_args(const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& boxes) {
  check_saliency(saliency);
  check_perm(perm, saliency.size(0), saliency.device());
  check_boxes(boxes, saliency.size(0), saliency.device());
}

void check_saliency_mix_args(
    const at::Tensor& images, const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& box_h,
    const at::Tensor& box_w, c10::string_view mode) {
  TORCH_CHECK_VALUE(mode == "window" || mode == "peak", "mode must be 'window' or 'peak', got '", mode, "'");
  check_images(images);
  check_saliency(saliency);
  check_images_match(images, saliency);
  check_perm(perm, images.size(0), images.device());
  check_box_sizes(box_h, "box_h", images.size(0), images.device());
  check_box_sizes(box_w, "box_w", images.size(0), images.device());
}

void check_values(
    const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& boxes, int64_t height, int64_t width) {
  // Gather every statistic on the data's device, then read them all with one copy.
  std::vector<at::Tensor> stats;
  const bool saliency_stats = saliency.defined() && saliency.numel() > 0 && saliency.is_floating_point();
  const bool perm_stats = perm.defined() && perm.numel() > 0;
  const bool box_stats = boxes.defined() && boxes.numel() > 0;
  if (saliency_stats) {
    auto [low, high] = at::aminmax(saliency);
    stats.push_back(low.to(at::kDouble).reshape({1}));
    stats.push_back(high.to(at::kDouble).reshape({1}));
  }
  if (perm_stats) {
    auto [low, high] = at::aminmax(perm);
    stats.push_back(low.to(at::kDouble).reshape({1}));
    stats.push_back(high.to(at::kDouble).reshape({1}));
  }
  if (box_stats) {
    const auto y1 = boxes.select(1, 0), x1 = boxes.select(1, 1), y2 = boxes.select(1, 2), x2 = boxes.select(1, 3);
    // Each row must be >= 0 for every box: y1, x1, y2 - y1, x2 - x1, H - y2, W - x2.
    stats.push_back(at::stack({y1, x1, y2 - y1, x2 - x1, height - y2, width - x2}).amin(1).to(at::kDouble));
  }
  if (stats.empty()) {
    return;
  }
  const at::Tensor host = at::cat(stats).cpu();
  const double* v = host.data_ptr<double>();
  if (saliency_stats) {
    TORCH_CHECK_VALUE(
        v[0] >= 0 && std::isfinite(v[1]), "saliency must be finite and >= 0, got values in [", v[0], ", ", v[1], "]");
    v += 2;
  }
  if (perm_stats) {
    const int64_t batch = perm.size(0);
    TORCH_CHECK_VALUE(
        v[0] >= 0 && v[1] < static_cast<double>(batch), "perm values must be in [0, ", batch, "), got values in [",
        static_cast<int64_t>(v[0]), ", ", static_cast<int64_t>(v[1]), "]");
    v += 2;
  }
  if (box_stats) {
    static const char* const broken[6] = {"y1 < 0", "x1 < 0", "y2 < y1", "x2 < x1", "y2 > H", "x2 > W"};
    for (int k = 0; k < 6; ++k) {
      TORCH_CHECK_VALUE(
          v[k] >= 0, "boxes must satisfy 0 <= y1 <= y2 <= H = ", height, " and 0 <= x1 <= x2 <= W = ", width,
          "; found a box with ", broken[k]);
    }
  }
}

}  // namespace saliencymixplus

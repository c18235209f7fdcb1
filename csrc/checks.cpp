#include "checks.h"

#include <ATen/ATen.h>

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

void check_saliency_mix_plus_args(
    const at::Tensor& images, const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& box_h,
    const at::Tensor& box_w, c10::string_view box) {
  TORCH_CHECK_VALUE(box == "window" || box == "peak", "box must be 'window' or 'peak', got '", box, "'");
  check_images(images);
  check_saliency(saliency);
  check_images_match(images, saliency);
  check_perm(perm, images.size(0), images.device());
  check_box_sizes(box_h, "box_h", images.size(0), images.device());
  check_box_sizes(box_w, "box_w", images.size(0), images.device());
}

}  // namespace saliencymixplus

// Argument checks shared by the CPU and CUDA kernels: shapes, dtypes and devices only, so
// they never read device data (no host sync). Values are the kernels' business (mix_math.h
// says what odd values mean) and the Python ops' (check=True). Every message names the
// argument and says what was expected and what came.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

namespace saliencymixplus {

// saliency: Tensor[B, H, W] of float32/float64/float16/bfloat16 or uint8, H > 0 and W > 0.
void check_saliency(const at::Tensor& saliency);
// images: Tensor[B, C, H, W].
void check_images(const at::Tensor& images);
// images and saliency: same device, saliency of shape [B, H, W] matching images.
void check_images_match(const at::Tensor& images, const at::Tensor& saliency);
// box_h / box_w: int64 Tensor[B] on `device`.
void check_box_sizes(const at::Tensor& size, const char* name, int64_t batch, const at::Device& device);
// perm: int64 Tensor[B] on `device`.
void check_perm(const at::Tensor& perm, int64_t batch, const at::Device& device);
// boxes: int64 Tensor[B, 4] on `device`.
void check_boxes(const at::Tensor& boxes, int64_t batch, const at::Device& device);

// Each op's checks of shapes, dtypes and devices, shared by its CPU and CUDA kernels.
void check_search_args(const at::Tensor& saliency, const at::Tensor& box_h, const at::Tensor& box_w);
void check_paste_args(const at::Tensor& images, const at::Tensor& perm, const at::Tensor& boxes);
void check_label_weights_args(const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& boxes);
void check_saliency_mix_plus_args(
    const at::Tensor& images, const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& box_h,
    const at::Tensor& box_w, c10::string_view box);

}  // namespace saliencymixplus

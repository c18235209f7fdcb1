// The CUDA building blocks the op kernels share, as host launchers: every __global__ kernel is
// defined once, in kernels.cu, so that a function attribute and a launch address the same kernel.
// Each launcher runs on the current device and stream, takes contiguous tensors on that device
// and never copies anything to the host.
#pragma once

#include <ATen/core/Tensor.h>

namespace saliencymixplus {
namespace cuda {

// Summed-area tables of a contiguous Tensor[B, H, W] -> float64 Tensor[B, H + 1, W + 1]: rows
// summed first, each from left to right, then columns (the CPU kernels' order, bit for bit).
at::Tensor summed_area_tables(const at::Tensor& saliency);

// boxes[i] = the box of image i on the map of its source perm[i] (i itself when perm is
// undefined): the most salient box_h x box_w window of sat (peak = false), or the published box
// centred on the map's peak (peak = true; sat may be undefined).
void search(const at::Tensor& saliency, const at::Tensor& sat, const at::Tensor& perm, const at::Tensor& box_h,
            const at::Tensor& box_w, bool peak, at::Tensor& boxes);

// Whether window_on_chip can take this contiguous saliency on the current device and stream:
// uint8 maps whose int32 table fits the shared memory the kernel may use there. Asks the
// runtime once per device, outside any CUDA-graph capture (during a capture before that, no).
bool window_fits_on_chip(const at::Tensor& saliency);

// Window boxes of uint8 maps with each source's table in shared memory, and, when lam is
// defined, the label weights in the same launch (window_fits_on_chip must hold; perm may be
// undefined: each map is its own source).
void window_on_chip(const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& box_h,
                    const at::Tensor& box_w, at::Tensor& boxes, const at::Tensor& lam);

// lam[i] = the label weight of image i (mix_math.h) from the target's and the source's sums,
// which equal the CPU kernel's: float64 sums in row-major order (integers for uint8).
void label_weights(const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& boxes, at::Tensor& lam);

// out = paste of `in` (both contiguous in `format`) with perm and boxes on the device.
void paste(const at::Tensor& in, at::Tensor& out, const at::Tensor& perm, const at::Tensor& boxes,
           at::MemoryFormat format);

}  // namespace cuda
}  // namespace saliencymixplus

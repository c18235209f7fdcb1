// peak_boxes: boxes centred on each map's most salient pixel, clipped (the published rule).
// Kernels: cpu/peak_boxes_kernel.cpp, cuda/peak_boxes_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(saliencymixplus, m) {
  m.def("peak_boxes(Tensor saliency, Tensor box_h, Tensor box_w) -> Tensor");
}

// window_search: the most salient box_h x box_w window of each map (summed-area table).
// Kernels: cpu/window_search_kernel.cpp, cuda/window_search_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(saliencymixplus, m) {
  m.def("window_search(Tensor saliency, Tensor box_h, Tensor box_w) -> Tensor");
}

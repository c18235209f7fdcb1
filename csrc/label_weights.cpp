// label_weights: the saliency-weighted weight of each target label (docs/design.md, "The algorithm", step 4).
// Kernels: cpu/label_weights_kernel.cpp, cuda/label_weights_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(saliencymixplus, m) {
  m.def("label_weights(Tensor saliency, Tensor perm, Tensor boxes) -> Tensor");
}

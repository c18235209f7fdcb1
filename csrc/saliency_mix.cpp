// saliency_mix: box search on each source's saliency, paste and label weights in one op.
// Kernels: cpu/saliency_mix_kernel.cpp, cuda/saliency_mix_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(saliencymixplus, m) {
  m.def(
      "saliency_mix(Tensor images, Tensor saliency, Tensor perm, Tensor box_h, Tensor box_w, str mode)"
      " -> (Tensor, Tensor, Tensor)");
}

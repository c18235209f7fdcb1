// saliency_mix_plus: SaliencyMix+ in one op: box search on each source's saliency, paste and
// label weights. Kernels: cpu/saliency_mix_plus_kernel.cpp, cuda/saliency_mix_plus_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(saliencymixplus, m) {
  m.def(
      "saliency_mix_plus(Tensor images, Tensor saliency, Tensor perm, Tensor box_h, Tensor box_w, str box)"
      " -> (Tensor, Tensor, Tensor)");
}

// paste: out[i] = images[i] with box i of images[perm[i]] pasted at the same place.
// Kernels: cpu/paste_kernel.cpp, cuda/paste_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(saliencymixplus, m) {
  m.def("paste(Tensor images, Tensor perm, Tensor boxes) -> Tensor");
}

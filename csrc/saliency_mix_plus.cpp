// saliency_mix_plus: SaliencyMix+ in one op: box search on each source's saliency, paste and
// label weights. Kernels: cpu/saliency_mix_plus_kernel.cpp, cuda/saliency_mix_plus_kernel.cu.
//
// saliency_mix is its deprecated name (until 0.3): the same op with the box argument called
// mode; it warns once and calls saliency_mix_plus on any device.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

namespace saliencymixplus {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> saliency_mix_deprecated(
    const at::Tensor& images, const at::Tensor& saliency, const at::Tensor& perm, const at::Tensor& box_h,
    const at::Tensor& box_w, c10::string_view mode) {
  TORCH_WARN_ONCE(
      "torch.ops.saliencymixplus.saliency_mix is deprecated and will be removed in 0.3: it computes "
      "SaliencyMix+, so it is now saliency_mix_plus (its last argument is called box)");
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("saliencymixplus::saliency_mix_plus", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, c10::string_view)>();
  return op.call(images, saliency, perm, box_h, box_w, mode);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(saliencymixplus, m) {
  m.def(
      "saliency_mix_plus(Tensor images, Tensor saliency, Tensor perm, Tensor box_h, Tensor box_w, str box)"
      " -> (Tensor, Tensor, Tensor)");
  m.def(
      "saliency_mix(Tensor images, Tensor saliency, Tensor perm, Tensor box_h, Tensor box_w, str mode)"
      " -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(saliencymixplus, CompositeImplicitAutograd, m) {
  m.impl("saliency_mix", &saliency_mix_deprecated);
}

}  // namespace saliencymixplus

// The memory layout paste writes, shared by the CPU and CUDA kernels and mirrored by
// saliencymixplus.ops.paste_memory_format (the references and the fake kernels).
#pragma once

#include <ATen/core/Tensor.h>

namespace saliencymixplus {

// Channels-last for a channels-last input (that is not also plain contiguous), else NCHW.
inline at::MemoryFormat paste_format(const at::Tensor& images) {
  return images.is_contiguous(at::MemoryFormat::ChannelsLast) && !images.is_contiguous()
      ? at::MemoryFormat::ChannelsLast
      : at::MemoryFormat::Contiguous;
}

}  // namespace saliencymixplus

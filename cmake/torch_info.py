"""Prints what CMakeLists.txt needs to know of the installed torch, one KEY=value a line (lists |-separated)."""

import torch
from torch.utils import cpp_extension

print(f"TORCH_VERSION={torch.__version__}")
print(f"TORCH_CUDA_VERSION={torch.version.cuda or ''}")
print(f"TORCH_INCLUDE_DIRS={'|'.join(cpp_extension.include_paths())}")
print(f"TORCH_LIB_DIR={cpp_extension.library_paths()[0]}")
print(f"TORCH_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}")
visible = torch.cuda.is_available() and torch.version.cuda is not None
capabilities = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}) if visible else []
print(f"TORCH_VISIBLE_GPU_ARCHS={'|'.join(f'{major}.{minor}' for major, minor in capabilities)}")

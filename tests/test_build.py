"""What the build produced: the compiled ops and, where CI asks for them, the CUDA kernels."""

import os

import pytest
import torch

import saliencymixplus


@pytest.mark.skipif(os.environ.get("SMP_REQUIRE_EXTENSION") != "1", reason="SMP_REQUIRE_EXTENSION is not set")
def test_compiled_cpu_kernels_are_loaded():
    info = saliencymixplus.extension_info()
    assert info["loaded"] and info["cpu"], info
    for op in info["ops"]:
        assert hasattr(torch.ops.saliencymixplus, op)


@pytest.mark.skipif(os.environ.get("SMP_REQUIRE_CUDA_KERNELS") != "1", reason="SMP_REQUIRE_CUDA_KERNELS is not set")
def test_cuda_kernels_were_built():
    assert saliencymixplus.extension_info()["cuda"], "the CUDA kernels were not compiled: see the build log"


def test_extension_info_shape():
    info = saliencymixplus.extension_info()
    assert set(info) == {"loaded", "cpu", "cuda", "ops", "error"}
    assert info["loaded"] == (info["error"] is None)


@pytest.mark.skipif(not saliencymixplus.extension_info()["loaded"], reason="the compiled extension is not built")
def test_the_extension_registers_its_ops_and_no_other():
    """One schema per op: the deprecated second name of the fused op (saliency_mix) is gone."""
    registered = sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("saliencymixplus::"))
    assert registered == sorted(f"saliencymixplus::{op}" for op in saliencymixplus.extension_info()["ops"])

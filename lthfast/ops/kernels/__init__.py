"""lthfast's kernels, one folder per op (lthfast.ops is the public API over them):

    apply_mask/       apply_mask_        zero the pruned entries, in place
    masked_sgd/       masked_sgd_        torch.optim.SGD's step fused with the mask (one lr or one per member)
    magnitude_prune/  magnitude_prune    global magnitude pruning, ties by index
    lerp_points/      lerp_points        K interpolation points [K, n] in one pass

Each folder holds the op's Python function (checks, backend dispatch, torch.library
registration under torch.ops.lthfast), its plain-PyTorch reference, triton.py and, where
the op has one, cpu.cpp (lthfast._C) and cuda.cu with cuda_binding.cpp (lthfast._cuda).
backends.py picks and loads the backends. Importing this package registers the ops;
Triton is optional (`AVAILABLE` says whether it imports).
"""
from lthfast.ops.kernels import apply_mask, lerp_points, magnitude_prune, masked_sgd  # noqa: F401  (registers the ops)
from lthfast.ops.kernels.backends import triton_available


def __getattr__(name):
    if name == "AVAILABLE":  # lazily: importing triton costs a second, and only its users pay it
        return triton_available()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

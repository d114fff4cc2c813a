"""lthfast's kernels behind one API, each with a plain-PyTorch reference.

    apply_mask_(tensor, mask)                       zero the pruned entries, in place
    masked_sgd_(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov)
                                                    torch.optim.SGD's step fused with the mask;
                                                    lr a float or one float32 per member
    magnitude_prune(weights, mask, count, largest)  global magnitude pruning, ties by index
    lerp_points(theta_a, theta_b, alphas)           K interpolation points [K, n] in one pass

backend="torch" is the reference; "cpp" (C++, CPU), "cuda" (built where CUDA is present),
"triton" (on the CPU only under TRITON_INTERPRET=1) and "auto" (the fastest available for
the tensors' device) give the same results, up to floating-point rounding for masked_sgd_
and exactly for the masks. The implementations live in lthfast/ops/kernels/<op>/; each op is
also registered as torch.ops.lthfast.<name>, so that torch.compile can trace through it.
BACKENDS is owned here (the training config imports it from this module).
"""
from lthfast.ops.kernels.apply_mask import apply_mask_, apply_mask_reference_
from lthfast.ops.kernels.backends import (
           BACKENDS,
           check_backend,
           resolve_backend,
           runnable_backend,
)
from lthfast.ops.kernels.lerp_points import lerp_points, lerp_points_reference
from lthfast.ops.kernels.magnitude_prune import (
           magnitude_prune,
           magnitude_prune_reference,
)
from lthfast.ops.kernels.masked_sgd import (
           SGD_DTYPES,
           masked_sgd_,
           masked_sgd_reference_,
)

__all__ = ["BACKENDS", "SGD_DTYPES", "apply_mask_", "apply_mask_reference_", "check_backend", "lerp_points",
           "lerp_points_reference", "magnitude_prune", "magnitude_prune_reference", "masked_sgd_",
           "masked_sgd_reference_", "resolve_backend", "runnable_backend"]

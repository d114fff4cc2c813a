"""The compiled extensions lthfast._C (CPU) and lthfast._cuda, if they were built at install time.

Kept as the historical import path; the loading lives in lthfast.ops.kernels.backends.
Without a working compiler the package installs anyway and every op runs on its
plain-PyTorch path; cpp_ops() says so once, on first use.
"""
from lthfast.ops.kernels.backends import cpp_ops, cuda_ops, triton_available

__all__ = ["cpp_ops", "cuda_ops", "triton_available"]

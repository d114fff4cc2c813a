"""Triton kernels of lthfast, installed as the package `lthfast.kernels`.

Triton is optional: importing this package without it works, and
`lthfast.kernels.AVAILABLE` says whether the kernels can run.
"""
try:
    import triton  # noqa: F401
    AVAILABLE = True
except ImportError:  # plain-PyTorch installs
    AVAILABLE = False

"""lthfast: fast, reproducible lottery-ticket research (IMP with rewinding on CIFAR-10).

Library entry points: `lthfast.ops` (kernels), `lthfast.models.families`, `lthfast.data.loading`,
`lthfast.training.trainer`. The command line is `python -m lthfast`.
"""
import importlib

from lthfast.foundations.errors import LthError

__version__ = "0.1.0"
__all__ = ["ops", "LthError", "__version__"]


def __getattr__(name):
    # `lthfast.ops` on first use: importing lthfast alone stays light (no torch), so that the
    # command line can route signals before the heavy imports start.
    if name == "ops":
        return importlib.import_module("lthfast.ops")
    raise AttributeError(f"module 'lthfast' has no attribute {name!r}")

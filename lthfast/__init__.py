"""lthfast: fast, reproducible lottery-ticket research (IMP with rewinding on CIFAR-10).

Library entry points: `lthfast.ops` (kernels), `lthfast.models`, `lthfast.data`,
`lthfast.trainer`. The command line is `python -m lthfast`.
"""
from lthfast import ops
from lthfast.errors import LthError

__version__ = "0.1.0"
__all__ = ["ops", "LthError", "__version__"]

"""Data sets (each its own module and one registry entry: cifar10, cifar100, imagefolder,
synthetic), their sources (ImageFolder copies, torchvision downloads), loading by name,
class-balanced subsets, the epoch plan, evaluation samples.

`register` adds a data set (lthfast.data.registry.register), `get` finds a name's entry;
importing this package registers the built-in ones, so a name such as cifar10 resolves
whichever module of the package is imported first.
"""
from lthfast.data import cifar10, cifar100, imagefolder, synthetic  # noqa: F401,E402  (each registers its data set)
from lthfast.data.registry import DataSetEntry, get, register  # noqa: F401

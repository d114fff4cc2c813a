"""Model families (CIFAR ResNets and VGGs, each its own module and one registry entry), your
own models by factory name (`package.module:factory`, lthfast.models.custom), and K networks
of one architecture as one module (stacked).

`register` adds a family (lthfast.models.registry.register), `lookup` finds a name's;
importing this package registers the built-in families and the factory resolver, so a name
such as resnet20 resolves whichever module of the package is imported first.
"""
from lthfast.models import custom, resnet, vgg  # noqa: F401,E402  (each registers its family or resolver)
from lthfast.models.registry import ModelFamily, lookup, register  # noqa: F401

"""Network architectures by name (the family: the common classifier and EfficientNet-Lite0).

Importing the package registers every architecture, so ``build_model`` knows
them all whichever module a caller imports.
"""

from . import efficientnet_lite  # noqa: F401  (registers "efficientnet_lite0")
from .base import (
    POOLS,
    ClassifierNet,
    adapt_first_conv,
    arch_parameters,
    available_archs,
    build_model,
    check_arch,
    register_arch,
)

__all__ = [
    "POOLS",
    "ClassifierNet",
    "adapt_first_conv",
    "arch_parameters",
    "available_archs",
    "build_model",
    "check_arch",
    "register_arch",
]

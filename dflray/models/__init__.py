"""Torch models of the training stage: SAEHD's DF/LIAE and DFL's AMP autoencoders, and their discriminators.

The losses live in :mod:`dflray.models.losses` (not re-exported: they import kornia).
"""

from dflray.models.df_liae import DFLModel, build_model, count_parameters
from dflray.models.discriminators import (
                                          CodeDiscriminator,
                                          UNetPatchDiscriminator,
                                          build_code_discriminator,
                                          build_patch_discriminator,
)

__all__ = [
    "CodeDiscriminator",
    "DFLModel",
    "UNetPatchDiscriminator",
    "build_code_discriminator",
    "build_model",
    "build_patch_discriminator",
    "count_parameters",
]

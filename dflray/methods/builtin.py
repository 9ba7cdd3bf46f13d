"""The built-in methods, registered by importing this module (``base._load_builtin`` does, once).

Model methods (DeepFaceLab's autoencoders) are declared here; each training-free method registers
itself in its own module, imported below.
"""

from __future__ import annotations

from dataclasses import dataclass

from dflray.config import ConfigError
from dflray.methods.base import register_model_method


@dataclass(frozen=True)
class NoSettings:
    """A method with no settings of its own (a model method's settings are its training config's)."""


register_model_method("df", version=1, model="source", settings=NoSettings,
                      summary="DeepFaceLab SAEHD DF: shared encoder and inter, one decoder per identity")
register_model_method("liae", version=1, model="source", settings=NoSettings,
                      summary="DeepFaceLab SAEHD LIAE: shared encoder and decoder, inter_AB and inter_B")
# DeepFaceLab's Quick96: a fixed, small DF model (df-ud at 96 px, full face, code 128, encoder and decoder
# 64 channels, mask decoder 16), trained like the others; its fixed model replaces models.train.model.
register_model_method("quick96", version=1, model="source", settings=NoSettings,
                      summary="DeepFaceLab Quick96: a fixed small DF model, df-ud at 96 px on full faces",
                      model_config={"arch": "df", "u": True, "d": True, "t": False, "c": False, "resolution": 96,
                                    "face_type": "full", "ae_dims": 128, "e_dims": 64, "d_dims": 64,
                                    "d_mask_dims": 16})



@dataclass(frozen=True)
class AmpSettings:
    """Settings of ``amp`` at merge time (its training options are ``models.train.model``'s:
    ``inter_dims``, ``morph_factor``).

    Attributes:
        morph_factor: how much of the source identity the swap takes, 0..1: the first
            ``inter_dims * morph_factor`` channels of the decoder's input come from the src head, the rest
            from the destination's own code (DFL's merger prompt, default 1.0).
    """

    morph_factor: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.morph_factor <= 1.0:
            raise ConfigError("morph_factor", f"must be in 0..1, got {self.morph_factor}")


# DeepFaceLab's AMP: the plan's models.train.model with arch amp (its own layout; inter_dims, morph_factor).
register_model_method("amp", version=1, model="source", settings=AmpSettings,
                      summary="DeepFaceLab AMP: shared encoder and decoder, src and dst inter heads mixed by a "
                              "merge-time morph factor")

from dflray.methods import landmark_warp, onnx_swap, self_blend  # noqa: E402,F401  (register the others)

"""The built-in methods, registered by importing this module (``base._load_builtin`` does, once).

Model methods (DeepFaceLab's autoencoders) are declared here; each training-free method registers
itself in its own module, imported below.
"""

from __future__ import annotations

from dataclasses import dataclass

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

from dflray.methods import landmark_warp, self_blend  # noqa: E402,F401  (register landmark-warp, sbi, xray-blend)

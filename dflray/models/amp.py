"""DeepFaceLab's AMP model ("amplifier"/"morph") in one readable torch file.

AMP is DFL's later single-decoder model: one encoder and one decoder shared by both identities, and two
dense *inter* heads, ``inter_src`` and ``inter_dst``, that turn the encoder's code into the decoder's
input. Identity lives in which head made which channels of that input:

* **src reconstruction** reads a per-sample random mix: exactly ``k = int(inter_dims * morph_factor)``
  channels (a fresh random subset for every sample) from ``inter_src``, the rest from ``inter_dst``;
* **dst reconstruction** reads ``inter_dst`` only;
* **the swap** (merge) reads the *first* ``int(inter_dims * morph)`` channels of ``inter_src(dst)`` and
  the rest of ``inter_dst(dst)``: ``morph`` chosen at merge time blends dst's identity (0) into src's
  (1), which is AMP's point.

As in DFL, only the encoder and the decoder train: the two inter heads keep their initial (Glorot)
weights, two fixed random projections of the learned code, so the encoder learns a code that both map
sensibly. Layers follow DFL's AMP: a five-downscale encoder with residual blocks after the first and
the last, pixel norm, then a dense layer to ``ae_dims``; inters ``ae_dims -> (inter_dims, R/32, R/32)``;
the decoder of SAEHD's ``-t -d`` form (four upscale + residual stages, a 2x depth-to-space output, a
five-upscale mask branch). Images are float32 RGB in ``[0, 1]``, NCHW.

Example:
    >>> import torch
    >>> from dflray.config import ModelConfig
    >>> model = AMPModel(ModelConfig(arch="amp", resolution=64, ae_dims=32, inter_dims=64, e_dims=16,
    ...                              d_dims=16, d_mask_dims=4))
    >>> face, face_mask, dst_mask = model.swap(torch.rand(2, 3, 64, 64))
    >>> tuple(face.shape), tuple(face_mask.shape)
    ((2, 3, 64, 64), (2, 1, 64, 64))
"""

from __future__ import annotations

import torch
from torch import nn

from dflray.config import ModelConfig
from dflray.models.df_liae import Decoder, Encoder, _halve, _training_outputs, code_shape
from dflray.models.layers import glorot_init_


class AMPInter(nn.Module):
    """``Linear(ae_dims, res**2 * inter_dims)`` reshaped to ``(inter_dims, res, res)`` (DFL's AMP inter)."""

    def __init__(self, ae_dims: int, inter_dims: int, res: int):
        super().__init__()
        self.inter_dims, self.res = inter_dims, res
        self.dense = nn.Linear(ae_dims, res * res * inter_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x).reshape(-1, self.inter_dims, self.res, self.res)


def first_channels_mask(channels: int, morph: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(1, C, 1, 1)``: 1 for the first ``floor(C * morph)`` channels, 0 for the rest.

    Tensor arithmetic rather than a Python slice, so that a traced export keeps ``morph`` a value read
    from the module (the merge sets it) instead of a constant.
    """
    k = torch.floor(morph * channels)
    idx = torch.arange(channels, device=like.device, dtype=like.dtype)
    return (idx < k.to(like.dtype)).to(like.dtype).reshape(1, channels, 1, 1)


def random_channels_mask(n: int, channels: int, k: int, like: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, C, 1, 1)``: per sample, exactly ``k`` of the ``C`` channels at 1, a uniform random subset."""
    order = torch.rand(n, channels, generator=generator).argsort(dim=1)
    return (order < k).to(device=like.device, dtype=like.dtype).reshape(n, channels, 1, 1)


class AMPModel(nn.Module):
    """DFL's AMP autoencoder built from a :class:`~dflray.config.ModelConfig` with ``arch="amp"``.

    Submodules: ``encoder`` (convs, pixel norm, dense to ``ae_dims``), ``inter_src``, ``inter_dst``
    (frozen), ``decoder``. Weights start Glorot-uniform with zero biases, as DFL's. Each training forward
    draws its src mixes from a generator seeded by the ``mix_draws`` buffer, then advances it.

    Attributes:
        cfg: the model config (``morph_factor``: the training mix; ``inter_dims``).
        code_shape: ``(C, H, W)`` of ``src_code``/``dst_code``.
        morph: a 0-d buffer, the merge-time morph in ``[0, 1]`` that :meth:`swap` uses (default 1.0, DFL's
            merger default: all of the src head's channels). Not saved in checkpoints (a merge choice,
            not a weight); an exported model keeps it as a buffer that ``Predictor.load`` can set.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch != "amp":
            raise ValueError(f"AMPModel builds arch amp, not {cfg.arch!r}")
        self.cfg = cfg
        res = cfg.resolution
        convs = Encoder(3, cfg.e_dims, deep=True, use_pixel_norm=True)
        enc_res = _halve(res, convs.n_downscales)
        self.encoder = nn.Sequential(convs, nn.Linear(convs.out_ch * enc_res * enc_res, cfg.ae_dims))
        self.code_shape = code_shape(cfg)
        self.inter_src = AMPInter(cfg.ae_dims, cfg.inter_dims, self.code_shape[1])
        self.inter_dst = AMPInter(cfg.ae_dims, cfg.inter_dims, self.code_shape[1])
        self.decoder = Decoder(cfg.inter_dims, cfg.d_dims, cfg.d_mask_dims, deep=True, double=True)
        self.register_buffer("morph", torch.tensor(1.0), persistent=False)
        # The training mixes' random stream: a seed drawn at construction (the trainer seeds torch), one
        # step on per training forward, kept in checkpoints, so a resumed run draws what an unbroken one does.
        self.register_buffer("mix_draws", torch.randint(0, 2**62, (), dtype=torch.int64))
        glorot_init_(self)
        for head in (self.inter_src, self.inter_dst):  # DFL trains encoder and decoder only
            head.requires_grad_(False)

    def set_morph(self, value: float) -> None:
        """Sets the merge-time morph (0: dst's own code, 1: the src head's code throughout)."""
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"morph must be in 0..1, got {value}")
        self.morph.fill_(float(value))

    def _swap_code(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        m = first_channels_mask(self.cfg.inter_dims, self.morph, a)
        return a * m + b * (1 - m)

    def forward(self, warped_src: torch.Tensor, warped_dst: torch.Tensor,
                detached_swap: bool = False) -> dict[str, torch.Tensor]:
        """Reconstructs both identities and swaps dst to src, as AMP's training graph.

        Args:
            warped_src: ``(N, 3, R, R)`` src inputs.
            warped_dst: ``(M, 3, R, R)`` dst inputs.
            detached_swap: also decode the swap from a gradient-stopped code into ``src_dst_detached``.

        Returns:
            The keys of :meth:`dflray.models.DFLModel.forward`: ``src_src``, ``dst_dst``, ``src_dst`` and
            their ``*_mask``, ``src_code`` (the morph-mixed src code), ``dst_code`` (``inter_dst``'s) and,
            if asked, ``src_dst_detached``.
        """
        n = warped_src.shape[0]
        codes = self.encoder(torch.cat([warped_src, warped_dst]))
        a, b = self.inter_src(codes), self.inter_dst(codes)
        k = int(self.cfg.inter_dims * self.cfg.morph_factor)
        draw = torch.Generator().manual_seed(int(self.mix_draws))
        with torch.no_grad():
            self.mix_draws += 1
        mix = random_channels_mask(n, self.cfg.inter_dims, k, a, draw)
        src_code = a[:n] * mix + b[:n] * (1 - mix)
        return _training_outputs(src_code, b[n:], self._swap_code(a[n:], b[n:]), self.decoder, detached_swap)

    def swap(self, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference (DFL's ``AE_merge``): ``(face, face_mask, dst_mask)`` of dst crops ``(N, 3, R, R)``,
        the face decoded from the morphed code, ``dst_mask`` from dst's own code."""
        code = self.encoder(dst)
        a, b = self.inter_src(code), self.inter_dst(code)
        face, face_mask = self.decoder(self._swap_code(a, b))
        return face, face_mask, self.decoder.forward_mask(b)

    def generator_parameters(self, random_warp: bool = True) -> list[nn.Parameter]:
        """Encoder and decoder: what DFL's AMP optimizer updates (the inter heads stay as initialised)."""
        return [p for p in self.parameters() if p.requires_grad]

"""DeepFaceLab SAEHD's DF and LIAE autoencoders in one readable torch file.

The architecture follows DFL's ``DeepFakeArchi`` and ``Model_SAEHD`` with the ``-u -d -t -c`` flags
(see :class:`dflray.config.ModelConfig`). Images are float32 RGB in ``[0, 1]``, NCHW.

* **DF**: one encoder and one inter shared by both identities, one decoder per identity. The swap is
  ``decoder_src(inter(encoder(dst)))``.
* **LIAE**: one encoder and one decoder shared by both identities; ``inter_ab`` sees both identities,
  ``inter_b`` only dst. The decoder reads two concatenated inter codes: src ``[AB(src), AB(src)]``,
  dst ``[B(dst), AB(dst)]``, swap ``[AB(dst), AB(dst)]``.

Example:
    >>> import torch
    >>> from dflray.config import ModelConfig
    >>> model = build_model(ModelConfig(arch="df", resolution=64, ae_dims=32, e_dims=16, d_dims=16,
    ...                                 d_mask_dims=4))
    >>> face, face_mask, dst_mask = model.swap(torch.rand(2, 3, 64, 64))
    >>> tuple(face.shape), tuple(face_mask.shape)
    ((2, 3, 64, 64), (2, 1, 64, 64))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dflray.config import ModelConfig
from dflray.models.layers import Downscale, DownscaleBlock, ResidualBlock, Upscale, conv2d, glorot_init_, pixel_norm


def _halve(size: int, times: int) -> int:
    # A 'SAME' stride-2 conv outputs ceil(size / 2). DFL assumes size // 2**times, which only agrees when
    # the size divides evenly (DFL crashes otherwise, e.g. -t at 80 px); the real size always works.
    for _ in range(times):
        size = (size + 1) // 2
    return size


class Encoder(nn.Module):
    """Downscaling convs, flattened (NCHW order, as DFL's ``nn.flatten``), pixel-normed with ``-u``.

    Args:
        in_ch: input channels (3).
        e_ch: base channels; the last stage has ``8 * e_ch``.
        deep: the ``-t`` chain: five downscales with residual blocks after the first and the last.
        use_pixel_norm: the ``-u`` flag.
        cos_act: the ``-c`` flag.
    """

    def __init__(self, in_ch: int, e_ch: int, deep: bool = False, use_pixel_norm: bool = False,
                 cos_act: bool = False):
        super().__init__()
        self.use_pixel_norm = use_pixel_norm
        self.out_ch = e_ch * 8
        self.n_downscales = 5 if deep else 4
        if deep:
            self.down = nn.Sequential(
                Downscale(in_ch, e_ch, 5, cos_act), ResidualBlock(e_ch, cos_act=cos_act),
                Downscale(e_ch, e_ch * 2, 5, cos_act), Downscale(e_ch * 2, e_ch * 4, 5, cos_act),
                Downscale(e_ch * 4, e_ch * 8, 5, cos_act), Downscale(e_ch * 8, e_ch * 8, 5, cos_act),
                ResidualBlock(e_ch * 8, cos_act=cos_act))
        else:
            self.down = DownscaleBlock(in_ch, e_ch, n_downscales=4, kernel_size=5, cos_act=cos_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.down(x), 1)
        return pixel_norm(x, -1) if self.use_pixel_norm else x


class Inter(nn.Module):
    """Dense bottleneck: ``Linear(in, ae_ch)``, ``Linear(ae_ch, res**2 * out_ch)`` (no activation between,
    as DFL), reshaped to ``(out_ch, res, res)`` and upscaled once unless ``-t``.

    Args:
        in_features: flattened encoder size.
        ae_ch: code dimensions (``ae_dims``).
        ae_out_ch: channels of the reshaped code.
        lowest_res: spatial size of the reshaped code (``resolution // (32 if d else 16)``).
        upscale: append an Upscale (every arch without ``-t``).
        cos_act: the ``-c`` flag.
    """

    def __init__(self, in_features: int, ae_ch: int, ae_out_ch: int, lowest_res: int, upscale: bool = True,
                 cos_act: bool = False):
        super().__init__()
        self.ae_out_ch = ae_out_ch
        self.lowest_res = lowest_res
        self.dense1 = nn.Linear(in_features, ae_ch)
        self.dense2 = nn.Linear(ae_ch, lowest_res * lowest_res * ae_out_ch)
        self.upscale = Upscale(ae_out_ch, ae_out_ch, 3, cos_act) if upscale else nn.Identity()
        self.out_res = lowest_res * 2 if upscale else lowest_res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(x))
        x = x.reshape(-1, self.ae_out_ch, self.lowest_res, self.lowest_res)
        return self.upscale(x)


class Decoder(nn.Module):
    """Face branch (Upscale + ResidualBlock stages, RGB conv) and mask branch (Upscales, 1-channel conv).

    With ``-d`` the face ends in four RGB convs (one 1x1, three 3x3), one per sub-pixel position of a
    2x depth-to-space, and the mask branch gets one more Upscale. Both outputs are sigmoids.

    Args:
        in_ch: code channels.
        d_ch: face branch base channels (``d_dims``).
        d_mask_ch: mask branch base channels (``d_mask_dims``).
        deep: ``-t``: four upscale stages instead of three.
        double: ``-d``: output at twice the last stage's resolution.
        cos_act: the ``-c`` flag.
    """

    def __init__(self, in_ch: int, d_ch: int, d_mask_ch: int, deep: bool = False, double: bool = False,
                 cos_act: bool = False):
        super().__init__()
        self.double = double
        chs = [d_ch * 8, d_ch * 8, d_ch * 4, d_ch * 2] if deep else [d_ch * 8, d_ch * 4, d_ch * 2]
        mchs = [d_mask_ch * 8, d_mask_ch * 8, d_mask_ch * 4, d_mask_ch * 2] if deep else \
            [d_mask_ch * 8, d_mask_ch * 4, d_mask_ch * 2]
        if double:
            mchs.append(d_mask_ch)
        face: list[nn.Module] = []
        for prev, ch in zip([in_ch] + chs[:-1], chs):
            face += [Upscale(prev, ch, 3, cos_act), ResidualBlock(ch, 3, cos_act)]
        self.face = nn.Sequential(*face)
        self.mask = nn.Sequential(*[Upscale(prev, ch, 3, cos_act) for prev, ch in zip([in_ch] + mchs[:-1], mchs)])
        self.out_conv = conv2d(chs[-1], 3, 1)
        if double:
            self.out_conv1 = conv2d(chs[-1], 3, 3)
            self.out_conv2 = conv2d(chs[-1], 3, 3)
            self.out_conv3 = conv2d(chs[-1], 3, 3)
        self.out_convm = conv2d(mchs[-1], 1, 1)

    def forward_face(self, z: torch.Tensor) -> torch.Tensor:
        """The face only, ``(N, 3, H, W)`` in (0, 1)."""
        x = self.face(z)
        if not self.double:
            return torch.sigmoid(self.out_conv(x))
        # Stack as (N, RGB, 4, h, w) so that conv k fills sub-pixel k = 2*dy + dx for all three colours,
        # which is what DFL's concat + TF depth_to_space does; torch's pixel shuffle reads channel c*4 + k.
        x = torch.stack([self.out_conv(x), self.out_conv1(x), self.out_conv2(x), self.out_conv3(x)], dim=2)
        return torch.sigmoid(F.pixel_shuffle(torch.flatten(x, 1, 2), 2))

    def forward_mask(self, z: torch.Tensor) -> torch.Tensor:
        """The mask only, ``(N, 1, H, W)`` in (0, 1)."""
        return torch.sigmoid(self.out_convm(self.mask(z)))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_face(z), self.forward_mask(z)


def code_shape(cfg: ModelConfig) -> tuple[int, int, int]:
    """``(C, H, W)`` of the codes the decoders read (DF: the inter output; LIAE: two concatenated inters;
    AMP: an inter head's output)."""
    if cfg.arch == "amp":
        return (cfg.inter_dims, cfg.resolution // 32, cfg.resolution // 32)
    lowest_res = cfg.resolution // (32 if cfg.d else 16)
    res = lowest_res if cfg.t else lowest_res * 2
    return (cfg.ae_dims if cfg.arch == "df" else cfg.ae_dims * 4, res, res)


def _training_outputs(src_code: torch.Tensor, dst_code: torch.Tensor, swap_code: torch.Tensor, decoder: Decoder,
                      detached_swap: bool) -> dict[str, torch.Tensor]:
    """The training graph's outputs from the three decoder inputs of one shared decoder (LIAE, AMP): the
    ``forward`` dict of :class:`DFLModel`."""
    extra = [swap_code.detach()] if detached_swap else []
    src_src, dst_dst, src_dst, *detached = _decode(decoder, [src_code, dst_code, swap_code] + extra)
    return _outputs(src_src, dst_dst, src_dst, detached, src_code, dst_code)


def _outputs(src_src, dst_dst, src_dst, detached, src_code: torch.Tensor, dst_code: torch.Tensor
             ) -> dict[str, torch.Tensor]:
    out = {"src_src": src_src[0], "src_src_mask": src_src[1], "dst_dst": dst_dst[0],
           "dst_dst_mask": dst_dst[1], "src_dst": src_dst[0], "src_dst_mask": src_dst[1],
           "src_code": src_code, "dst_code": dst_code}
    if detached:
        out["src_dst_detached"] = detached[0][0]
    return out


def _decode(decoder: Decoder, codes: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # One decoder call on the concatenated codes, split back into (face, mask) per code.
    faces, masks = decoder(torch.cat(codes))
    sizes = [c.shape[0] for c in codes]
    return list(zip(faces.split(sizes), masks.split(sizes)))


class DFLModel(nn.Module):
    """DFL SAEHD autoencoder (DF or LIAE) built from a :class:`~dflray.config.ModelConfig`.

    Submodules: ``encoder`` and, for DF, ``inter``, ``decoder_src``, ``decoder_dst``; for LIAE,
    ``inter_ab``, ``inter_b``, ``decoder``. Weights start Glorot-uniform with zero biases, as DFL's.

    Attributes:
        cfg: the model config.
        code_shape: ``(C, H, W)`` of ``src_code``/``dst_code`` (the input of the code discriminator).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch not in ("df", "liae"):
            raise ValueError(f"DFLModel builds arch df or liae, not {cfg.arch!r} (build_model builds any)")
        self.cfg = cfg
        self.is_df = cfg.arch == "df"
        res = cfg.resolution
        self.encoder = Encoder(3, cfg.e_dims, deep=cfg.t, use_pixel_norm=cfg.u, cos_act=cfg.c)
        enc_res = _halve(res, self.encoder.n_downscales)
        enc_features = self.encoder.out_ch * enc_res * enc_res
        lowest_res = res // (32 if cfg.d else 16)

        def inter(out_ch: int) -> Inter:
            return Inter(enc_features, cfg.ae_dims, out_ch, lowest_res, upscale=not cfg.t, cos_act=cfg.c)

        def decoder(in_ch: int) -> Decoder:
            return Decoder(in_ch, cfg.d_dims, cfg.d_mask_dims, deep=cfg.t, double=cfg.d, cos_act=cfg.c)

        if self.is_df:
            self.inter = inter(cfg.ae_dims)
            self.decoder_src = decoder(cfg.ae_dims)
            self.decoder_dst = decoder(cfg.ae_dims)
        else:
            self.inter_ab = inter(cfg.ae_dims * 2)
            self.inter_b = inter(cfg.ae_dims * 2)
            self.decoder = decoder(cfg.ae_dims * 4)
        self.code_shape = code_shape(cfg)
        glorot_init_(self)

    def forward(self, warped_src: torch.Tensor, warped_dst: torch.Tensor,
                detached_swap: bool = False) -> dict[str, torch.Tensor]:
        """Reconstructs both identities and swaps dst to src, as SAEHD's training graph.

        Encoder, inters and decoders each run once on the concatenated batch (no layer mixes samples,
        so this equals DFL's separate calls).

        Args:
            warped_src: ``(N, 3, R, R)`` src inputs.
            warped_dst: ``(M, 3, R, R)`` dst inputs.
            detached_swap: also decode the swap from a gradient-stopped code into ``src_dst_detached``
                (DFL's ``pred_src_dst_no_code_grad``), which ``face_style_power`` needs.

        Returns:
            ``src_src``, ``dst_dst``, ``src_dst`` faces ``(·, 3, R, R)``, their ``*_mask`` ``(·, 1, R, R)``,
            ``src_code`` and ``dst_code`` (the decoder inputs of src and dst reconstruction; for DF the
            inter outputs) and, if asked, ``src_dst_detached``.
        """
        n = warped_src.shape[0]
        feats = self.encoder(torch.cat([warped_src, warped_dst]))
        if self.is_df:
            codes = self.inter(feats)
            src_code, dst_code = codes[:n], codes[n:]
            extra = [dst_code.detach()] if detached_swap else []
            src_src, src_dst, *detached = _decode(self.decoder_src, [src_code, dst_code] + extra)
            (dst_dst,) = _decode(self.decoder_dst, [dst_code])
            return _outputs(src_src, dst_dst, src_dst, detached, src_code, dst_code)
        ab = self.inter_ab(feats)
        ab_src, ab_dst = ab[:n], ab[n:]
        src_code = torch.cat([ab_src, ab_src], 1)
        dst_code = torch.cat([self.inter_b(feats[n:]), ab_dst], 1)
        return _training_outputs(src_code, dst_code, torch.cat([ab_dst, ab_dst], 1), self.decoder, detached_swap)

    def swap(self, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference: the dst faces with the src identity (DFL's ``AE_merge``).

        Args:
            dst: ``(N, 3, R, R)`` aligned dst crops in ``[0, 1]``.

        Returns:
            ``(face, face_mask, dst_mask)``: the swapped face, its predicted mask, and the dst decoder's
            own mask of dst (DFL's learned-dst mask). Only the mask branch runs for ``dst_mask``.
        """
        feats = self.encoder(dst)
        if self.is_df:
            code = self.inter(feats)
            face, face_mask = self.decoder_src(code)
            return face, face_mask, self.decoder_dst.forward_mask(code)
        ab = self.inter_ab(feats)
        face, face_mask = self.decoder(torch.cat([ab, ab], 1))
        dst_mask = self.decoder.forward_mask(torch.cat([self.inter_b(feats), ab], 1))
        return face, face_mask, dst_mask

    def generator_parameters(self, random_warp: bool = True) -> list[nn.Parameter]:
        """The parameters SAEHD's autoencoder optimizer updates.

        DFL freezes LIAE's ``inter_ab`` while random warp is off (it trains only encoder, ``inter_b`` and
        decoder then); DF always trains everything.
        """
        if self.is_df or random_warp:
            return list(self.parameters())
        return [p for name, p in self.named_parameters() if not name.startswith("inter_ab.")]


def build_model(cfg: ModelConfig) -> nn.Module:
    """Builds the autoencoder that ``cfg`` describes (DF, LIAE or AMP), freshly initialised.

    Every one has the same interface: ``forward(warped_src, warped_dst, detached_swap)`` (the training
    graph's outputs), ``swap(dst)``, ``generator_parameters(random_warp)`` and ``code_shape``.
    """
    if cfg.arch == "amp":
        from dflray.models.amp import AMPModel

        return AMPModel(cfg)
    return DFLModel(cfg)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts per top-level submodule (``encoder``, ``inter``…, ``decoder``…) and ``total``."""
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts

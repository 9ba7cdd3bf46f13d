"""SAEHD's training losses (DeepFaceLab ``Model_SAEHD``), for NCHW float tensors in ``[0, 1]``.

The autoencoder step minimises ``autoencoder_losses(...)["total"]`` plus, when enabled,
:func:`gan_generator_loss` and :func:`true_face_generator_loss`; the discriminators are stepped on
:func:`gan_discriminator_loss` and :func:`true_face_discriminator_loss` (which see detached predictions).
Generator terms also put gradients on the discriminators' parameters: zero those before the
discriminator's backward (or step only the autoencoder's parameters with the generator loss).
With ``blur_out_mask`` on, pass the batch through :func:`apply_blur_out_mask` first (once, for all of
them); with ``face_style_power`` on, run the model with ``detached_swap=True``.

Everything is averaged over the batch. DFL differentiates the per-sample sum (``tf.gradients`` of a
vector); the mean only rescales the gradient, which AdaBelief/Adam/RMSprop normalise away (up to eps
and gradient clipping).

Example:
    >>> import torch
    >>> a = torch.rand(2, 3, 64, 64)
    >>> float(dssim(a, a, 5).max()) < 1e-6
    True
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from dflray.config import LossConfig

BATCH_KEYS = ("warped_src", "target_src", "target_srcm", "target_srcm_em",
              "warped_dst", "target_dst", "target_dstm", "target_dstm_em")


def dssim_filter_size(size: float) -> int:
    """DFL's SSIM window ``int(size)`` (e.g. ``int(resolution / 11.6)``), made odd for kornia.

    DFL accepts even windows (centred between pixels); kornia's Gaussian needs an odd one, so an even
    size is rounded up to the next odd. The window is a sigma-1.5 Gaussian either way: from 16 taps on
    (192 px and up) its tails are negligible and DSSIM moves by under 0.1% (one more cropped border
    pixel); DFL's 8-tap window at 96 px truncates the Gaussian, and 9 taps change DSSIM by about 2%.
    """
    n = max(1, int(size))
    return n if n % 2 else n + 1


def dssim(a: torch.Tensor, b: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Structural dissimilarity ``(1 - SSIM) / 2`` per sample, as DFL's ``nn.dssim``.

    A Gaussian window (sigma 1.5) over valid positions only (DFL convolves without padding), averaged
    over channels and pixels. An even ``kernel_size`` is rounded up to odd (see :func:`dssim_filter_size`).

    Args:
        a: ``(N, C, H, W)`` images in ``[0, 1]``.
        b: same shape as ``a``.
        kernel_size: Gaussian window size in pixels.

    Returns:
        ``(N,)`` values in ``[0, 1]``; 0 for identical images.
    """
    k = dssim_filter_size(kernel_size)
    # eps=0: DFL adds nothing to the denominators, which c1 * c2 > 0 already keep positive.
    ssim = kornia.metrics.ssim(a, b, k, max_val=1.0, eps=0.0, padding="valid")
    return ((1.0 - ssim) / 2.0).mean(dim=(1, 2, 3))


def gaussian_kernel_size(sigma: float) -> int:
    """DFL's ``nn.gaussian_blur`` window for a sigma: ``max(3, int(4 * sigma))``, rounded up to odd."""
    k = max(3, int(2 * 2 * sigma))
    return k if k % 2 else k + 1


def gaussian_blur(x: torch.Tensor, radius: float) -> torch.Tensor:
    """DFL's ``nn.gaussian_blur``: Gaussian of sigma ``radius`` with zero padding (size kept).

    Zero padding (not reflection) matters: it darkens borders, which the masks below rely on exactly
    as DFL's do.
    """
    k = gaussian_kernel_size(radius)
    return kornia.filters.gaussian_blur2d(x, (k, k), (float(radius), float(radius)), border_type="constant")


def style_loss(target: torch.Tensor, style: torch.Tensor, gaussian_blur_radius: float = 0.0,
               loss_weight: float = 1.0) -> torch.Tensor:
    """DFL's ``nn.style_loss``: squared differences of per-channel means and standard deviations.

    Both images are blurred first when ``gaussian_blur_radius > 0``. Per sample,
    ``loss_weight / C * sum_c[(mean_t - mean_s)**2 + (std_t - std_s)**2]`` with
    ``std = sqrt(var + 1e-5)`` (population variance over pixels).

    Returns:
        ``(N,)`` losses.
    """
    if gaussian_blur_radius > 0.0:
        target = gaussian_blur(target, gaussian_blur_radius)
        style = gaussian_blur(style, gaussian_blur_radius)
    t_var, t_mean = torch.var_mean(target, dim=(2, 3), correction=0)
    s_var, s_mean = torch.var_mean(style, dim=(2, 3), correction=0)
    t_std, s_std = torch.sqrt(t_var + 1e-5), torch.sqrt(s_var + 1e-5)
    per_sample = ((t_mean - s_mean) ** 2).sum(1) + ((t_std - s_std) ** 2).sum(1)
    return per_sample * (loss_weight / target.shape[1])


def total_variation_mse(x: torch.Tensor) -> torch.Tensor:
    """DFL's ``nn.total_variation_mse``: summed squared neighbour differences per sample, ``(N,)``."""
    dh = x[:, :, 1:, :] - x[:, :, :-1, :]
    dw = x[:, :, :, 1:] - x[:, :, :, :-1]
    return dh.pow(2).sum(dim=(1, 2, 3)) + dw.pow(2).sum(dim=(1, 2, 3))


def blur_out_mask(x: torch.Tensor, mask: torch.Tensor, resolution: int) -> torch.Tensor:
    """SAEHD's ``blur_out_mask``: smooths the background near the face, keeping the face.

    Outside the mask each pixel becomes a normalised blur of the background alone,
    ``blur(x * (1 - m)) / (1 - blur(m))`` with sigma ``resolution / 128``. As in DFL the denominator is
    ``1 - blur(m)`` (zero-padded), so the background darkens slightly toward the image border.

    Args:
        x: ``(N, C, R, R)`` images.
        mask: ``(N, 1, R, R)`` face masks in ``[0, 1]``.
        resolution: training resolution.
    """
    sigma = resolution / 128
    anti = 1.0 - mask
    num = gaussian_blur(x * anti, sigma)
    den = 1.0 - gaussian_blur(mask, sigma)
    den = torch.where(den == 0, torch.ones_like(den), den)
    return x * mask + (num / den) * anti


def face_masks(mask: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SAEHD's training mask: blur (sigma ``max(1, resolution // 32)``), clip to 0.5, double.

    The result is 1 inside the face and fades to 0 a few pixels beyond its edge.

    Returns:
        ``(mask_blur, 1 - mask_blur)``.
    """
    blurred = torch.clamp(gaussian_blur(mask, max(1, resolution // 32)), 0.0, 0.5) * 2.0
    return blurred, 1.0 - blurred


def _float32(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Under autocast the model emits bf16/fp16; SSIM moments and style statistics want float32.
    return {k: v.float() for k, v in out.items()}


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).mean(dim=(1, 2, 3))


def _reconstruction(target: torch.Tensor, pred: torch.Tensor, resolution: int) -> torch.Tensor:
    # DFL: 10 * DSSIM at window res/11.6 below 256 px, half of it plus 5 * DSSIM at res/23.2 from 256 px.
    if resolution < 256:
        loss = 10.0 * dssim(target, pred, int(resolution / 11.6))
    else:
        loss = 5.0 * dssim(target, pred, int(resolution / 11.6)) + 5.0 * dssim(target, pred, int(resolution / 23.2))
    return loss + 10.0 * _mse(target, pred)


def apply_blur_out_mask(batch: dict[str, torch.Tensor], resolution: int) -> dict[str, torch.Tensor]:
    """The batch with ``target_src``/``target_dst`` passed through :func:`blur_out_mask` (their own masks).

    Call it before the losses when ``LossConfig.blur_out_mask`` is on; the loss functions never apply
    it themselves. As in DFL only the targets change: the warped inputs keep their background.
    """
    out = dict(batch)
    out["target_src"] = blur_out_mask(batch["target_src"], batch["target_srcm"], resolution)
    out["target_dst"] = blur_out_mask(batch["target_dst"], batch["target_dstm"], resolution)
    return out


def autoencoder_losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], loss: LossConfig,
                       resolution: int) -> dict[str, torch.Tensor]:
    """SAEHD's src and dst reconstruction losses, with its style terms added to the src loss.

    Per identity: 10 x DSSIM (two scales from 256 px) + 10 x MSE of the images, multiplied by the
    blurred face mask when ``masked_training``; + 300 x L1 inside the eyes/mouth mask with
    ``eyes_mouth_prio``; + 10 x MSE of the predicted mask. ``loss.blur_out_mask`` is the caller's job
    (:func:`apply_blur_out_mask` on the batch first), so that it runs once for all loss functions. With
    ``face_style_power`` (a percentage, as DFL's option; needs ``out["src_dst_detached"]``
    from ``model(..., detached_swap=True)``) the swap masked by its predicted mask is pulled toward the
    colour statistics of the dst reconstruction masked by its predicted mask: :func:`style_loss`, blur
    radius ``resolution // 8``, weight ``100 * face_style_power``. With ``bg_style_power`` the swap is
    pulled toward dst outside the blurred mask: ``bg_style_power / 10 * (DSSIM + MSE)``, where the mask
    is the src target's, as DFL's code has it (see the comment there).

    Args:
        out: :meth:`DFLModel.forward` outputs.
        batch: the eight :data:`BATCH_KEYS` tensors (masks have one channel).
        loss: which terms and their weights.
        resolution: training resolution (sets windows and blur radii).

    Returns:
        Scalars ``src_loss``, ``dst_loss`` and ``total`` (their sum, the autoencoder's loss before GAN
        and true-face terms).

    Raises:
        KeyError: ``face_style_power`` is on but ``out`` lacks ``src_dst_detached``.
    """
    out = _float32(out)
    target_src, target_dst = batch["target_src"], batch["target_dst"]
    srcm, dstm = batch["target_srcm"], batch["target_dstm"]
    srcm_blur, _ = face_masks(srcm, resolution)
    dstm_blur, _ = face_masks(dstm, resolution)
    pred_src, pred_dst = out["src_src"], out["dst_dst"]

    if loss.masked_training:
        src_loss = _reconstruction(target_src * srcm_blur, pred_src * srcm_blur, resolution)
        dst_loss = _reconstruction(target_dst * dstm_blur, pred_dst * dstm_blur, resolution)
    else:
        src_loss = _reconstruction(target_src, pred_src, resolution)
        dst_loss = _reconstruction(target_dst, pred_dst, resolution)

    if loss.eyes_mouth_prio:
        src_em, dst_em = batch["target_srcm_em"], batch["target_dstm_em"]
        src_loss = src_loss + 300.0 * (target_src * src_em - pred_src * src_em).abs().mean(dim=(1, 2, 3))
        dst_loss = dst_loss + 300.0 * (target_dst * dst_em - pred_dst * dst_em).abs().mean(dim=(1, 2, 3))

    src_loss = src_loss + 10.0 * _mse(srcm, out["src_src_mask"])
    dst_loss = dst_loss + 10.0 * _mse(dstm, out["dst_dst_mask"])

    if loss.face_style_power > 0:
        if "src_dst_detached" not in out:
            raise KeyError("face_style_power needs out['src_dst_detached']: call model(..., detached_swap=True)")
        # DFL trains only the src decoder here: the swap is decoded from a stopped code, and both masks
        # and the dst reconstruction are constants.
        swap = out["src_dst_detached"] * out["src_dst_mask"].detach()
        dst_style = (out["dst_dst"] * out["dst_dst_mask"]).detach()
        src_loss = src_loss + style_loss(swap, dst_style, gaussian_blur_radius=resolution // 8,
                                         loss_weight=10000.0 * loss.face_style_power / 100.0)

    if loss.bg_style_power > 0:
        # DFL computes a style mask from the predicted masks and then overwrites it with the blurred
        # *src* target mask; we reproduce what DFL actually trains on.
        anti = 1.0 - torch.clamp(srcm_blur, 0.0, 1.0).detach()
        weight = 10.0 * loss.bg_style_power / 100.0
        psd, td = out["src_dst"] * anti, target_dst * anti
        src_loss = src_loss + weight * dssim(psd, td, int(resolution / 11.6)) + weight * _mse(psd, td)

    src_loss, dst_loss = src_loss.mean(), dst_loss.mean()
    return {"src_loss": src_loss, "dst_loss": dst_loss, "total": src_loss + dst_loss}


def _bce(logits: torch.Tensor, label: float) -> torch.Tensor:
    # DFL's DLoss: sigmoid cross-entropy averaged over all but the batch axis.
    target = torch.full_like(logits, label)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(1, 2, 3))


def _gan_inputs(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], loss: LossConfig,
                resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # (real, fake) as the discriminator sees them, plus the target and anti-mask for the background term.
    target_src = batch["target_src"]
    srcm_blur, srcm_anti = face_masks(batch["target_srcm"], resolution)
    pred = out["src_src"].float()
    if loss.masked_training:
        return target_src * srcm_blur, pred * srcm_blur, target_src, srcm_anti
    return target_src, pred, target_src, srcm_anti


def gan_generator_loss(disc: torch.nn.Module, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                       loss: LossConfig, resolution: int) -> torch.Tensor:
    """SAEHD's GAN term of the autoencoder loss (src reconstruction vs the U-Net patch discriminator).

    ``gan_power * (BCE(1, D_center) + BCE(1, D_pixels))`` on the (masked) src reconstruction; with
    ``masked_training`` also ``1e-6 * total_variation_mse(pred)`` (against bright GAN dots) and
    ``0.02 * MSE`` of the reconstruction outside the mask (a little background reconstruction).

    Returns:
        A scalar to add to the autoencoder loss.
    """
    _, fake, target_src, anti = _gan_inputs(out, batch, loss, resolution)
    center, pixels = disc(fake)
    g = loss.gan_power * (_bce(center, 1.0) + _bce(pixels, 1.0))
    if loss.masked_training:
        pred = out["src_src"].float()
        g = g + 1e-6 * total_variation_mse(pred) + 0.02 * _mse(pred * anti, target_src * anti)
    return g.mean()


def gan_discriminator_loss(disc: torch.nn.Module, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                           loss: LossConfig, resolution: int) -> torch.Tensor:
    """The patch discriminator's loss: (masked) ``target_src`` real, the src reconstruction fake, each
    of its two outputs ``(BCE(1, D(real)) + BCE(0, D(fake))) / 2``. The reconstruction is detached."""
    real, fake, _, _ = _gan_inputs(out, batch, loss, resolution)
    real_c, real_p = disc(real)
    fake_c, fake_p = disc(fake.detach())
    d = 0.5 * (_bce(real_c, 1.0) + _bce(fake_c, 0.0)) + 0.5 * (_bce(real_p, 1.0) + _bce(fake_p, 0.0))
    return d.mean()


def true_face_generator_loss(code_disc: torch.nn.Module, out: dict[str, torch.Tensor],
                             loss: LossConfig) -> torch.Tensor:
    """SAEHD's true-face term: ``true_face_power * BCE(1, D(src_code))``.

    DFL's code discriminator learns dst codes as 1 and src codes as 0, and the autoencoder is pushed to
    make src codes look like dst codes, so that both identities share one code space and the swap
    (dst code through the src decoder) stays inside what the src decoder has learned.
    """
    return (loss.true_face_power * _bce(code_disc(out["src_code"]), 1.0)).mean()


def true_face_discriminator_loss(code_disc: torch.nn.Module, out: dict[str, torch.Tensor]) -> torch.Tensor:
    """The code discriminator's loss ``(BCE(1, D(dst_code)) + BCE(0, D(src_code))) / 2`` on detached codes."""
    dst_d = code_disc(out["dst_code"].detach())
    src_d = code_disc(out["src_code"].detach())
    return (0.5 * (_bce(dst_d, 1.0) + _bce(src_d, 0.0))).mean()

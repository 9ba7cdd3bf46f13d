"""Training previews like DFL's: a grid of src, reconstructions, dst and the swap, and a loss curve.

Columns: src | src→src | dst | dst→dst | swap (dst with the src identity) | the swap pasted
onto dst with its predicted mask. One row
per preview face. Pure numpy/OpenCV and matplotlib (Agg); the training loop writes the PNG bytes.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

COLUMNS = ("src", "src->src", "dst", "dst->dst", "swap", "pasted")
HEADER = 44  # two text lines: the step, then the column names


def _img(chw: np.ndarray) -> np.ndarray:
    """CHW float [0,1] → HWC uint8 (grey masks become 3 channels)."""
    x = np.clip(np.asarray(chw, dtype=np.float32), 0.0, 1.0).transpose(1, 2, 0)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return (x * 255.0 + 0.5).astype(np.uint8)


def preview_grid(samples: dict[str, np.ndarray], step: int) -> bytes:
    """PNG bytes of the preview grid.

    Args:
        samples: float arrays N×C×R×R in [0,1], RGB: ``src``, ``src_src``, ``dst``, ``dst_dst``,
            ``src_dst`` (the swap) and ``src_dst_mask``.
        step: shown in the header.
    """
    n, _, r, _ = samples["src"].shape
    rows = []
    for i in range(n):
        overlay = samples["dst"][i] * (1 - samples["src_dst_mask"][i]) + samples["src_dst"][i] * samples["src_dst_mask"][i]
        cells = [samples["src"][i], samples["src_src"][i], samples["dst"][i], samples["dst_dst"][i],
                 samples["src_dst"][i], overlay]
        rows.append(np.concatenate([_img(c) for c in cells], axis=1))
    grid = np.concatenate(rows, axis=0)
    header = np.full((HEADER, grid.shape[1], 3), 32, np.uint8)
    scale = 0.4
    cv2.putText(header, f"step {step}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, scale, (120, 200, 255), 1, cv2.LINE_AA)
    for j, name in enumerate(COLUMNS):
        cv2.putText(header, name, (j * r + 4, 36), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)
    out = np.concatenate([header, grid], axis=0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()


def loss_curve(history: np.ndarray, ssim: np.ndarray | None = None) -> bytes:
    """PNG bytes of the loss curve: ``history`` rows are (step, src_loss, dst_loss); ``ssim`` rows
    (step, held-out SSIM) are drawn on a second axis."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    if len(history):
        steps = history[:, 0]
        for col, name in ((1, "src"), (2, "dst")):
            ax.plot(steps, history[:, col], lw=0.6, alpha=0.35)
            k = max(1, len(history) // 50)
            if len(history) >= 2 * k:  # a running mean makes the trend readable on noisy losses
                smooth = np.convolve(history[:, col], np.ones(k) / k, mode="valid")
                ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"{name} loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if ssim is not None and len(ssim):
        ax2 = ax.twinx()
        ax2.plot(ssim[:, 0], ssim[:, 1], "o-", color="black", lw=1.2, ms=3,
                 label=f"held-out SSIM ({ssim[-1, 1]:.3f})")
        ax2.set_ylabel("held-out src SSIM")
        ax2.set_ylim(0, 1)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

"""A self-contained HTML page about a generated dataset (``dflray report DATASET --out report.html``).

The page needs nothing but the file: its CSS and JavaScript are inline and every image is a base64
``data:`` URI, so it can be mailed, attached to a ticket or opened from an object store offline.

- Header: the dataset id, how many videos, reals, fakes and identities, and the responsible-use line.
- The headline, ``swap_success`` (share of a fake's sampled frames whose face reads as the source
  person): the mean over the published fakes, how many reach 0.5 and 0.8, and its histogram. A fake is
  measured once and published at each compression level; it counts once here.
- Counts: split × label, and status, compression level and perturbation kind against the label
  (a video with a mix of distortions counts once under each kind in it).
- Histograms of the other metrics in ``config.QUALITY_METRICS`` over the fakes' rows (NaN skipped),
  drawn with matplotlib's Agg canvas (no pyplot, no display, no global backend switch).
- Evaluation (when ``dflray evaluate`` wrote ``evaluation.parquet``): the reference detector's frame- and
  video-level AUC with bootstrap intervals, over the test set and per method, compression level,
  perturbation kind and swap-quality bucket, with how it was trained and tested.
- A table of the fakes, sortable by any metric (``swap_success`` first) with a click on its header,
  worst quality first (failed gates, then most failed gates), with the real and the fake frame side by
  side. The frame is the one with the largest manipulation mask when
  the dataset has ``frames.parquet`` (``schema.DATASET_FRAMES``), else the middle frame. A missing or
  unreadable video gets a placeholder thumbnail saying so; it never stops the report.

Every string taken from the index is HTML-escaped; no index value is ever placed inside the script.

Example:
    >>> counts = build_report("s3://bucket/datasets/v1", "report.html")  # doctest: +SKIP
    >>> counts["fakes"], counts["thumbnails"]  # doctest: +SKIP
    (1200, 1000)
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import logging
import math
import posixpath
from collections import Counter
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from dflray.config import COMPRESSION_LEVELS, PERTURB_KINDS, QUALITY_METRICS, MergeSettings
from dflray.io.schema import read_table
from dflray.io.storage import arrow_filesystem, atomic_write, exists, join
from dflray.io.video import decode_range

__all__ = ["RESPONSIBLE_USE", "build_report", "metric_histogram_png", "perturbation_kinds", "thumbnail_jpeg"]

log = logging.getLogger(__name__)

RESPONSIBLE_USE = ("dflray makes forgeries for deepfake-detection research; every fake is labelled and "
                   "provenance-tagged (its original, source identity, method, model and settings are in "
                   "index.parquet).")

_SPLIT_ORDER = ("train", "val", "test")
_LABEL_ORDER = ("REAL", "FAKE")
_NONE = "(none)"

# ------------------------------------------------------------------------------ pure helpers


def perturbation_kinds(perturbation: str | None) -> list[str]:
    """The distortion kinds named in an index ``perturbation`` string (``"none"`` for none).

    Args:
        perturbation: the index column, e.g. ``"blur:3+noise:2"``, ``"none"`` or null.

    Returns:
        The kinds in the order written, without levels; ``["none"]`` when there is no distortion.

    Example:
        >>> perturbation_kinds("blur:3+noise:2")
        ['blur', 'noise']
        >>> perturbation_kinds(None)
        ['none']
    """
    if not perturbation or perturbation.strip().lower() == "none":
        return ["none"]
    kinds = [part.split(":", 1)[0].strip() for part in perturbation.split("+")]
    return [k for k in kinds if k] or ["none"]


def _finite(values: Iterable[Any]) -> np.ndarray:
    out = np.array([v for v in values if v is not None], dtype=np.float64)
    return out[np.isfinite(out)]


def metric_histogram_png(values: Sequence[float | None], metric: str, *, width: float = 4.0,
                         height: float = 2.6, dpi: int = 100,
                         value_range: tuple[float, float] | None = None) -> bytes:
    """A PNG histogram of one metric (None and NaN skipped), drawn on matplotlib's Agg canvas.

    Args:
        values: the metric of each fake.
        metric: the metric's name (the title).
        width: figure width, inches.
        height: figure height, inches.
        dpi: dots per inch.
        value_range: the x axis's fixed extent, binned in tenths (e.g. ``(0, 1)`` for a share); None
            fits the axis to the values.

    Returns:
        The PNG bytes; a figure saying "no values" when none is finite.

    Example:
        >>> metric_histogram_png([0.4, 0.5, float("nan")], "seam")[:4]
        b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    v = _finite(values)
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if v.size:
        bins = int(np.clip(np.sqrt(v.size) * 2, 5, 40)) if value_range is None else 10
        ax.hist(v, bins=bins, range=value_range, color="#3b6ea5", edgecolor="white", linewidth=0.5)
        if value_range is not None:
            ax.set_xlim(*value_range)
        ax.set_ylabel("fakes")
        skipped = len(values) - v.size
        ax.set_title(f"{metric}  (n={v.size}" + (f", {skipped} NaN skipped)" if skipped else ")"), fontsize=9)
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="#888")
        ax.set_title(metric, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def thumbnail_jpeg(rgb: np.ndarray, size: int, quality: int = 85) -> bytes:
    """An RGB frame scaled so its longer side is ``size`` pixels, as JPEG bytes.

    Args:
        rgb: (H, W, 3) uint8 frame.
        size: longer side of the thumbnail, pixels.
        quality: JPEG quality 1..100.

    Returns:
        The JPEG bytes.

    Raises:
        ValueError: when ``rgb`` is not an (H, W, 3) uint8 image or ``size`` < 1.

    Example:
        >>> thumbnail_jpeg(np.zeros((90, 160, 3), np.uint8), 80)[:2]
        b'\\xff\\xd8'
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(rgb, (tw, th), interpolation=interp)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _placeholder_jpeg(size: int, text: str) -> bytes:
    img = np.full((size * 3 // 4, size, 3), 225, np.uint8)
    cv2.rectangle(img, (1, 1), (img.shape[1] - 2, img.shape[0] - 2), (150, 150, 150), 1)
    scale = max(size / 400, 0.3)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = ((img.shape[1] - tw) // 2, (img.shape[0] + th) // 2)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (110, 110, 110), 1, cv2.LINE_AA)
    return thumbnail_jpeg(img, size)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _is_nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any) -> str:
    if _is_nan(v):
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# ------------------------------------------------------------------------------ reading the dataset


def _read_index(dataset: str) -> list[dict]:
    uri = join(dataset, "index.parquet")
    if not exists(uri):
        raise ValueError(f"dataset: no index.parquet under {dataset!r}")
    fs, path = arrow_filesystem(uri)
    return read_table("dataset", [path], filesystem=fs).to_pylist()


def _best_frames(dataset: str) -> dict[str, int]:
    """video_id → the frame with the largest manipulation mask, from ``frames.parquet`` when present."""
    uri = join(dataset, "frames.parquet")
    if not exists(uri):
        return {}
    try:
        fs, path = arrow_filesystem(uri)
        t = read_table("dataset_frames", [path], filesystem=fs, columns=["video_id", "frame_index", "mask_area"])
    except Exception as e:  # a broken optional side table only costs the choice of frame
        log.warning("frames.parquet unreadable, using middle frames: %s", e)
        return {}
    best: dict[str, tuple[float, int]] = {}
    for vid, idx, area in zip(*(t.column(c).to_pylist() for c in ("video_id", "frame_index", "mask_area"))):
        if vid is None or idx is None or _is_nan(area):
            continue
        if vid not in best or area > best[vid][0]:
            best[vid] = (area, idx)
    return {vid: idx for vid, (_, idx) in best.items()}


class _Thumbs:
    """Decodes single frames into thumbnails, caching by (path, frame) and the placeholders by reason."""

    def __init__(self, dataset: str, size: int):
        self.dataset = dataset
        self.size = size
        self.decoded = 0
        self.placeholders = 0
        self._cache: dict[tuple[str, int], tuple[str, bool, str]] = {}
        self._placeholder: dict[str, str] = {}

    def get(self, path: str | None, frame: int) -> tuple[str, bool, str]:
        """(data URI, is a real frame, note) for frame ``frame`` of the video at ``path`` (relative)."""
        if not path:
            return self._missing("no video")
        key = (path, frame)
        if key not in self._cache:
            self._cache[key] = self._decode(path, frame)
        uri, ok, note = self._cache[key]
        if ok:
            self.decoded += 1
        else:
            self.placeholders += 1
        return uri, ok, note

    def _decode(self, path: str, frame: int) -> tuple[str, bool, str]:
        uri = path if "://" in path or posixpath.isabs(path) else join(self.dataset, path)
        try:
            if not exists(uri):
                return self._placeholder_of("missing video")
            got = next(decode_range(uri, frame, frame + 1), None)
            if got is None and frame > 0:  # the frame count was wrong: fall back to the first frame
                got = next(decode_range(uri, 0, 1), None)
            if got is None:
                return self._placeholder_of("no frames")
            return _data_uri(thumbnail_jpeg(got[1], self.size), "image/jpeg"), True, f"frame {got[0]}"
        except Exception as e:  # any unreadable file becomes a placeholder: the report must not fail
            log.info("thumbnail of %s failed: %s", uri, e)
            return self._placeholder_of("unreadable video")

    def _missing(self, text: str) -> tuple[str, bool, str]:
        self.placeholders += 1
        return self._placeholder_of(text)

    def _placeholder_of(self, text: str) -> tuple[str, bool, str]:
        if text not in self._placeholder:
            self._placeholder[text] = _data_uri(_placeholder_jpeg(self.size, text), "image/jpeg")
        return self._placeholder[text], False, text


# ------------------------------------------------------------------------------ page sections


def _ordered(keys: Iterable[str], preferred: Sequence[str]) -> list[str]:
    keys = set(keys)
    return [k for k in preferred if k in keys] + sorted(keys - set(preferred))


def _count_table(table_id: str, title: str, rows_key: str, pairs: list[tuple[str, str]],
                 row_order: Sequence[str] = ()) -> str:
    """A table of counts of (row value, label) pairs, one column per label and a total."""
    counts = Counter(pairs)
    rows = _ordered({r for r, _ in pairs}, row_order)
    labels = _ordered({lab for _, lab in pairs}, _LABEL_ORDER)
    head = "".join(f"<th>{_esc(lab)}</th>" for lab in labels)
    out = [f'<table id="{table_id}" class="counts"><caption>{_esc(title)}</caption><thead><tr>'
           f"<th>{_esc(rows_key)}</th>{head}<th>total</th></tr></thead><tbody>"]
    for r in rows:
        key = f'data-{rows_key}="{_esc(r)}"'
        cells = "".join(f'<td {key} data-label="{_esc(lab)}">{counts[(r, lab)]}</td>' for lab in labels)
        total = sum(counts[(r, lab)] for lab in labels)
        out.append(f'<tr><th scope="row">{_esc(r)}</th>{cells}<td {key} data-label="total">{total}</td></tr>')
    foot = "".join(f'<td data-label="{_esc(lab)}">{sum(counts[(r, lab)] for r in rows)}</td>' for lab in labels)
    out.append(f'</tbody><tfoot><tr><th scope="row">total</th>{foot}<td data-label="total">{len(pairs)}</td>'
               "</tr></tfoot></table>")
    return "".join(out)


def _counts_section(rows: list[dict]) -> str:
    label = [r.get("label") or _NONE for r in rows]
    split = [(r.get("split") or _NONE, lab) for r, lab in zip(rows, label)]
    status = [(r.get("status") or _NONE, lab) for r, lab in zip(rows, label)]
    comp = [(r.get("compression") or _NONE, lab) for r, lab in zip(rows, label)]
    kinds = [(k, lab) for r, lab in zip(rows, label) for k in perturbation_kinds(r.get("perturbation"))]
    return ('<section id="counts"><h2>Counts</h2><div class="tables">'
            + _count_table("counts-split", "videos per split and label", "split", split, _SPLIT_ORDER)
            + _count_table("counts-status", "videos per status", "status", status, ("ok", "dropped", "error"))
            + _count_table("counts-compression", "videos per compression level", "compression", comp,
                           COMPRESSION_LEVELS)
            + _count_table("counts-perturbation", "videos per perturbation kind (a mix counts under each kind)",
                           "perturbation", kinds, ("none", *PERTURB_KINDS))
            + "</div></section>")


def _methods_section(fakes: list[dict]) -> str:
    """Per forgery method: its fakes by status, and the median of every quality metric over its ok fakes,
    with the share that passed the gates (fakes of several compression levels count once per level)."""
    if not fakes:
        return ""
    by: dict[str, list[dict]] = {}
    for r in fakes:
        by.setdefault(r.get("method") or _NONE, []).append(r)
    statuses = _ordered({r.get("status") or _NONE for r in fakes}, ("ok", "dropped", "error"))
    head = "".join(f"<th>{_esc(s)}</th>" for s in statuses) + "<th>gates passed</th>" + \
        "".join(f"<th>{_esc(m)}</th>" for m in QUALITY_METRICS)
    out = ['<section id="methods"><h2>By method</h2><p class="note">Fakes per status; median of each quality '
           'metric over the method\'s measured fakes (ok or dropped).</p><table id="by-method" class="counts">'
           f"<thead><tr><th>method</th>{head}</tr></thead><tbody>"]
    for name in sorted(by):
        rows = by[name]
        measured = [r for r in rows if r.get("status") in ("ok", "dropped")]
        key = f'data-method="{_esc(name)}"'
        cells = "".join(f'<td {key} data-status="{_esc(s)}">{sum((r.get("status") or _NONE) == s for r in rows)}</td>'
                        for s in statuses)
        passed = [bool(r.get("quality_pass")) for r in measured if r.get("quality_pass") is not None]
        cells += f'<td {key} data-metric="quality_pass">{_fmt(float(np.mean(passed))) if passed else "–"}</td>'
        for m in QUALITY_METRICS:
            vals = _finite(r.get(m) for r in measured)
            cells += f'<td {key} data-metric="{m}">{_fmt(float(np.median(vals))) if len(vals) else "–"}</td>'
        out.append(f'<tr><th scope="row">{_esc(name)}</th>{cells}</tr>')
    return "".join(out) + "</tbody></table></section>"


def _read_evaluation(dataset: str) -> list[dict]:
    """The rows of ``evaluation.parquet`` (``schema.EVALUATION``); [] when there is none or it is unreadable."""
    uri = join(dataset, "evaluation.parquet")
    if not exists(uri):
        return []
    try:
        fs, path = arrow_filesystem(uri)
        return read_table("evaluation", [path], filesystem=fs).to_pylist()
    except Exception as e:  # a broken optional table only costs its section
        log.warning("evaluation.parquet unreadable, no Evaluation section: %s", e)
        return []


def _auc_cells(r: dict | None) -> str:
    if r is None or _is_nan(r.get("auc")):
        return '<td class="num" data-value="">–</td><td class="num">–</td>'
    return (f'<td class="num" data-value="{float(r["auc"])!r}">{float(r["auc"]):.3f}</td>'
            f'<td class="num">{float(r["auc_lo"]):.3f} – {float(r["auc_hi"]):.3f}</td>')


_SLICE_ORDER = ("all", "method", "compression", "perturbation", "quality")


def _evaluation_section(rows: list[dict]) -> str:
    """The reference detector's AUCs per slice (``dflray evaluate``), frame and video level side by side."""
    if not rows:
        return ""
    r0 = rows[0]
    video = {(r["slice"], r["value"]): r for r in rows if r["level"] == "video"}
    frame = sorted((r for r in rows if r["level"] == "frame"),
                   key=lambda r: (_SLICE_ORDER.index(r["slice"]) if r["slice"] in _SLICE_ORDER else 99,
                                  str(r["value"])))
    conf = f"{float(r0.get('confidence') or 0.95):.0%}"
    head = ('<th data-sort="text" title="click to sort">slice</th><th>value</th>'
            f'<th data-sort="num" title="click to sort">frame AUC</th><th>{conf} interval</th>'
            f'<th data-sort="num" title="click to sort">video AUC</th><th>{conf} interval</th>'
            "<th>real videos</th><th>fake videos</th><th>real frames</th><th>fake frames</th><th>compared with</th>"
            "<th>note</th>")
    body = []
    for r in frame:
        against = "the slice's reals" if r.get("reals") == "slice" else "all test reals"
        body.append(f'<tr data-slice="{_esc(r["slice"])}" data-value="{_esc(r["value"])}">'
                    f'<td data-value="{_esc(r["slice"])}">{_esc(r["slice"])}</td><td>{_esc(r["value"])}</td>'
                    f'{_auc_cells(r)}{_auc_cells(video.get((r["slice"], r["value"])))}'
                    f'<td class="num">{_esc(r["n_real"])}</td><td class="num">{_esc(r["n_fake"])}</td>'
                    f'<td class="num">{_esc(r["n_real_frames"])}</td><td class="num">{_esc(r["n_fake_frames"])}</td>'
                    f"<td>{_esc(against)}</td><td>{_esc(r.get('note') or '')}</td></tr>")
    trained = (f"trained for {_esc(r0.get('epochs'))} epochs on {_esc(r0.get('train_videos'))} videos of "
               f"{_esc(r0.get('train_dataset'))}" if r0.get("epochs") else "not trained here (given weights)")
    init = f", starting from {_esc(r0.get('init_weights'))}" if r0.get("init_weights") else ", from scratch"
    if r0.get("protocol") == "holdout":
        protocol = ('<strong class="holdout">a within-split holdout</strong>: the test split lacked REAL or FAKE '
                    "videos, so a seeded share of the train split's real videos, each with its fakes, was held "
                    "out; it is not identity-disjoint")
    else:
        protocol = "the test split"
    shared = r0.get("shared_identities")
    shared_text = f" {_esc(shared)} identities appear in both the training and the test videos." if shared else ""
    return ('<section id="evaluation"><h2>Evaluation</h2>'
            f'<p class="note">Reference detector: {_esc(r0.get("detector"))} ({_esc(r0.get("size"))} px face '
            f"crops, up to {_esc(r0.get('frames'))} per video), {trained}{init}; tested on {protocol} "
            f"({_esc(r0.get('test_videos'))} videos scored, {_esc(r0.get('failed_videos'))} without crops left "
            f"out).{shared_text} Evaluated {_esc(r0.get('created'))}.</p>"
            '<p class="note">AUC: the chance that a fake scores above a real. Frame level: every crop; video level: '
            "the mean of a video's crop scores. Intervals: bootstrap percentiles, resampling videos. Compression "
            "and perturbation slices compare the slice's reals and fakes (a video with a mix of distortions is "
            "in each of its kinds); method and quality slices compare the slice's fakes with all test reals "
            "(reals have no method or swap_success). Quality buckets are terciles of the test fakes' "
            "swap_success. A detector trained from scratch on a small dataset is a weak reference: compare the "
            "slices with each other rather than read the figures as absolute.</p>"
            f'<table id="evaluation-table" class="sortable"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></section>")


def _figure(values: Sequence[float | None], metric: str, caption: str = "",
            value_range: tuple[float, float] | None = None) -> str:
    png = metric_histogram_png(values, metric, value_range=value_range)
    return (f'<figure class="histogram" data-metric="{_esc(metric)}"><img alt="histogram of {_esc(metric)}" '
            f'src="{_data_uri(png, "image/png")}"><figcaption>{_esc(caption or metric)}</figcaption></figure>')


def _headline_section(fakes: list[dict]) -> str:
    """``swap_success`` of the published fakes, one value per fake (its compression levels share it)."""
    per_fake = {r.get("item_id") or r.get("video_id"): r.get("swap_success") for r in fakes
                if r.get("status") == "ok"}
    values = list(per_fake.values())
    v = _finite(values)
    if v.size:
        ge50, ge80 = int((v >= 0.5).sum()), int((v >= 0.8).sum())
        figure = (f'<span class="figure" data-mean="{float(v.mean())!r}">{float(v.mean()):.2f}</span>'
                  f'<span class="label">mean swap_success over {v.size} published fakes</span>'
                  f'<span class="figure small" data-ge50="{ge50}">{ge50} of {v.size}</span>'
                  f'<span class="label">fakes at ≥ 0.5 ({ge50 / v.size:.0%}); {ge80} at ≥ 0.8 '
                  f'({ge80 / v.size:.0%})</span>')
    else:
        figure = '<span class="figure" data-mean="">–</span><span class="label">no published fake has a ' \
                 'swap_success</span>'
    unmeasured = len(values) - v.size
    note = f"; {unmeasured} not measured" if unmeasured else ""
    return ('<section id="headline"><h2>Swap success</h2><div class="headline"><div class="figures">' + figure
            + '</div>' + _figure(values, "swap_success", f"swap_success per published fake{note}", (0.0, 1.0))
            + '</div><p class="note">swap_success: the share of a fake\'s sampled frames in which the face, '
            're-detected in the fake, is recognised as the source person (nearer the source identity than the '
            'real face it replaced, and under dlib\'s same-person distance 0.6); a frame where no face is found '
            'counts as a failure.</p></section>')


def _histogram_section(fakes: list[dict]) -> tuple[str, int]:
    figs = [_figure([r.get(m) for r in fakes], m) for m in QUALITY_METRICS if m != "swap_success"]
    return ('<section id="metrics"><h2>Quality metrics of the fakes</h2><div class="histograms">'
            + "".join(figs) + "</div></section>"), len(figs)


def _quality_order(r: dict) -> tuple:
    """Worst first: failed gates, then unknown, then passed; more failed gates first; then the id."""
    q = r.get("quality_pass")
    reasons = [s for s in (r.get("quality_reasons") or "").split(";") if s.strip()]
    return ({False: 0, None: 1, True: 2}.get(q, 1), -len(reasons), str(r.get("video_id") or ""))


def _settings_text(r: dict) -> str:
    names = [f.name for f in dataclasses.fields(MergeSettings)] + ["smooth_window", "seed", "settings_sha256"]
    return "; ".join(f"{n}={r[n]}" for n in names if r.get(n) is not None)


_COLUMNS: tuple[tuple[str, str], ...] = (
    ("real | fake", ""), ("video_id", "text"), ("source → target", "text"), ("method", "text"),
    ("split", "text"), ("compression", "text"), ("perturbation", "text"),
    *((m, "num") for m in QUALITY_METRICS), ("quality", "text"), ("status", "text"))


def _fakes_section(fakes: list[dict], by_id: dict[str, dict], thumbs: _Thumbs, best: dict[str, int],
                   max_rows: int) -> tuple[str, int]:
    shown = sorted(fakes, key=_quality_order)[:max_rows]
    head = "".join(f'<th data-sort="{kind}" data-column="{_esc(name)}" title="click to sort">{_esc(name)}</th>'
                   if kind else f"<th>{_esc(name)}</th>" for name, kind in _COLUMNS)
    body = []
    for r in shown:
        vid = r.get("video_id")
        frames = r.get("frames") or 0
        frame = best.get(vid, frames // 2 if frames > 0 else 0)
        orig = by_id.get(r.get("original") or "")
        real_uri, real_ok, real_note = thumbs.get(orig.get("path") if orig else None, frame)
        fake_uri, fake_ok, fake_note = thumbs.get(r.get("path"), frame)
        thumb = (f'<td class="thumbs" data-frame="{frame}">'
                 f'<img class="thumb real{"" if real_ok else " placeholder"}" alt="real {_esc(r.get("original"))}" '
                 f'title="real: {_esc(r.get("original"))} ({_esc(real_note)})" src="{real_uri}">'
                 f'<img class="thumb fake{"" if fake_ok else " placeholder"}" alt="fake {_esc(vid)}" '
                 f'title="fake: {_esc(vid)} ({_esc(fake_note)})" src="{fake_uri}"></td>')
        who = f'{_esc(r.get("source_identity"))} → {_esc(r.get("target_identity"))}'
        metrics = "".join(
            f'<td class="num" data-value="{"" if _is_nan(r.get(m)) else repr(float(r[m]))}">{_esc(_fmt(r.get(m)))}</td>'
            for m in QUALITY_METRICS)
        q = r.get("quality_pass")
        qtext = "pass" if q is True else "fail" if q is False else "unknown"
        reasons = r.get("quality_reasons") or ""
        quality = (f'<td class="quality {qtext}">{qtext}'
                   + (f'<div class="reasons">{_esc(reasons)}</div>' if reasons else "") + "</td>")
        status = _esc(r.get("status"))
        if r.get("error"):
            status += f'<div class="reasons">{_esc(r.get("error"))}</div>'
        body.append(
            f'<tr data-video-id="{_esc(vid)}">{thumb}'
            f'<td data-value="{_esc(vid)}">{_esc(vid)}<div class="name">{_esc(r.get("name"))}</div></td>'
            f"<td>{who}</td>"
            f'<td title="{_esc(_settings_text(r))}">{_esc(r.get("method"))}</td>'
            f'<td>{_esc(r.get("split"))}</td><td>{_esc(r.get("compression"))}</td>'
            f'<td>{_esc(r.get("perturbation"))}</td>{metrics}{quality}<td>{status}</td></tr>')
    more = (f'<p class="note">Showing the {len(shown)} worst of {len(fakes)} fakes (max_rows={max_rows}).</p>'
            if len(shown) < len(fakes) else "")
    return ('<section id="fakes"><h2>Fakes</h2><p class="note">Worst quality first; click a column header to '
            'sort. Thumbnails: the real frame, then the fake one (the frame with the largest manipulation, '
            'else the middle frame).</p>' + more
            + f'<table id="fakes-table" class="sortable"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></section>"), len(shown)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{margin:0 0 .2em;font-size:1.6em}h2{border-bottom:2px solid #3b6ea5;padding-bottom:.2em;margin-top:1.6em}
.responsible{background:#fff4d6;border-left:4px solid #e0a800;padding:.5em .8em}
.summary span{display:inline-block;margin-right:1.2em;font-weight:600}
.tables{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
table{border-collapse:collapse;background:#fff;font-size:13px}
caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
thead th{background:#e8eef5}
th[data-sort]{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.counts td{text-align:right}
.histograms{display:flex;flex-wrap:wrap;gap:1em}
figure.histogram{margin:0;background:#fff;border:1px solid #ddd;padding:4px}
figcaption{font-size:12px;text-align:center}
.headline{display:flex;flex-wrap:wrap;gap:2em;align-items:center}
.figures{display:grid;grid-template-columns:auto auto;gap:.2em .8em;align-items:baseline}
.figure{font-size:3em;font-weight:700;color:#3b6ea5;text-align:right}.figure.small{font-size:1.8em}
.figures .label{color:#444}
td.thumbs{white-space:nowrap}img.thumb{margin-right:3px;border:1px solid #bbb}
img.placeholder{opacity:.8}
.quality.fail{color:#b00020;font-weight:600}.quality.pass{color:#1b7f2a}
.reasons,.name,.note{font-size:11px;color:#666;font-weight:400}
"""

# Sorts a table.sortable by the clicked header: numbers numerically (data-value; empty = NaN, always
# last), text by code point, case-insensitively (a cell's data-value, else its text; code points rather
# than localeCompare so the order does not depend on the browser's locale); a second click reverses.
_JS = """
(function(){
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    heads.forEach(function(th, col){
      if (!th.hasAttribute('data-sort')) return;
      th.addEventListener('click', function(){
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        heads.forEach(function(h){ h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var num = th.getAttribute('data-sort') === 'num';
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var key = function(r){
          var c = r.cells[col], v = c.getAttribute('data-value');
          if (num) return v === null || v === '' ? NaN : parseFloat(v);
          return (v === null ? c.textContent : v).trim().toLowerCase();
        };
        rows.sort(function(a, b){
          var x = key(a), y = key(b);
          if (num) {
            var nx = isNaN(x), ny = isNaN(y);
            if (nx || ny) return nx - ny;
            return asc ? x - y : y - x;
          }
          var d = x < y ? -1 : x > y ? 1 : 0;
          return asc ? d : -d;
        });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
})();
"""


# ------------------------------------------------------------------------------ the page


def build_report(dataset: str, out: str, *, max_rows: int = 500, thumb_size: int = 160) -> dict:
    """Writes a self-contained HTML report about a generated dataset.

    Args:
        dataset: the dataset root (any fsspec URL) holding ``index.parquet`` (``schema.DATASET``) and
            optionally ``frames.parquet`` (``schema.DATASET_FRAMES``), used to pick each fake's frame
            with the largest manipulation.
        out: where to write the page (any fsspec URL); written atomically.
        max_rows: most fakes listed in the table (worst quality first).
        thumb_size: longer side of each thumbnail, pixels.

    Returns:
        What the page holds: ``videos`` (index rows), ``reals``, ``fakes`` (fake rows in the index),
        ``rows`` (fakes listed), ``thumbnails`` (decoded frames shown), ``placeholders`` (thumbnails
        standing in for a missing or unreadable video), ``histograms``, ``evaluation`` (rows of
        ``evaluation.parquet`` shown, 0 without one), and ``bytes`` written.

    Raises:
        ValueError: when ``max_rows`` < 0, ``thumb_size`` < 16, or the dataset has no index.parquet.

    Example:
        >>> build_report("/data/ds1", "/data/ds1/report.html", max_rows=100)  # doctest: +SKIP
        {'videos': 240, 'reals': 40, 'fakes': 200, 'rows': 100, 'thumbnails': 200, ...}
    """
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_rows}")
    if thumb_size < 16:
        raise ValueError(f"thumb_size must be >= 16 pixels, got {thumb_size}")
    rows = _read_index(dataset)
    fakes = [r for r in rows if r.get("label") == "FAKE"]
    reals = [r for r in rows if r.get("label") == "REAL"]
    by_id = {r["video_id"]: r for r in rows if r.get("video_id") is not None}
    dataset_id = next((r["dataset_id"] for r in rows if r.get("dataset_id")), None) \
        or posixpath.basename(dataset.rstrip("/")) or dataset
    identities = {x for r in rows for x in (r.get("target_identity"), r.get("source_identity")) if x}

    thumbs = _Thumbs(dataset, thumb_size)
    headline_html = _headline_section(fakes)
    hist_html, n_hist = _histogram_section(fakes)
    n_hist += 1  # the headline's swap_success histogram
    fakes_html, n_rows = _fakes_section(fakes, by_id, thumbs, _best_frames(dataset), max_rows)
    evaluation = _read_evaluation(dataset)
    evaluation_html = _evaluation_section(evaluation)
    title = f"dflray dataset report: {dataset_id}"
    summary = "".join(f'<span class="count" data-count="{k}">{_esc(k)}: {v}</span>' for k, v in (
        ("videos", len(rows)), ("real", len(reals)), ("fake", len(fakes)), ("identities", len(identities))))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f'<header><h1>{_esc(title)}</h1><p class="source">{_esc(dataset)}</p>'
            f'<p class="summary">{summary}</p><p class="responsible">{_esc(RESPONSIBLE_USE)}</p></header>'
            + headline_html + _counts_section(rows) + _methods_section(fakes) + evaluation_html + hist_html
            + fakes_html
            + f"<script>{_JS}</script></body></html>\n")
    data = page.encode("utf-8")
    with atomic_write(out, "wb") as f:
        f.write(data)
    return {"videos": len(rows), "reals": len(reals), "fakes": len(fakes), "rows": n_rows,
            "evaluation": len(evaluation),
            "thumbnails": thumbs.decoded, "placeholders": thumbs.placeholders, "histograms": n_hist,
            "bytes": len(data)}

"""What extraction checks in the driver before any work: no Ray, nothing written.

Two mistakes used to surface only once work had begun. A ``detect.weights`` file that is no RetinaFace
ResNet-50 state dict failed in the start-up of every detector worker (pages of traceback, leftovers in
``--out``). A rerun into an existing faceset with other ``align`` options added crops of another face
type or size beside the old ones, and ``faceset.json`` (rewritten with each run's config) then
misdescribed the older rows. Both are refused here, with a one-line ``ConfigError`` naming the options,
as ``merge`` and ``generate`` refuse another model or plan for an existing output.
"""

from __future__ import annotations

import dataclasses
import json

from dflray.config import AlignConfig, ConfigError, ExtractConfig
from dflray.detect import check_weights
from dflray.faceset import committed_face_files
from dflray.io.storage import exists, join, open_uri

__all__ = ["check_align", "preflight"]

ALIGN_FIELDS = tuple(f.name for f in dataclasses.fields(AlignConfig))


def preflight(out: str, cfg: ExtractConfig) -> None:
    """Refuses an extraction into ``out`` that would fail in its workers or corrupt the faceset there.

    Args:
        out: the faceset URI (need not exist).
        cfg: the validated extract config.

    Raises:
        ConfigError: naming ``align.*`` (``out`` holds faces aligned otherwise), ``--out`` (its
            ``faceset.json`` cannot be read) or ``detect.weights`` (missing, unsafe, or not a RetinaFace
            ResNet-50 state dict).

    Example:
        >>> preflight("facesets/a", ExtractConfig())  # doctest: +SKIP
    """
    check_align(out, cfg.align)
    check_weights(cfg.detect)


def check_align(out: str, align: AlignConfig) -> None:
    """Refuses ``align`` options other than those of the faces already committed in the faceset ``out``.

    Only committed faces count: a faceset whose runs all crashed before their commit holds no rows to
    contradict. Options the faceset does not record (``import-dfl`` records only face type and size) are
    not compared, nor is ``jpeg_quality`` between PNG runs.

    Raises:
        ConfigError: naming every ``align.*`` option that differs, with both values.
    """
    manifest = join(out, "faceset.json")
    if not exists(manifest) or not committed_face_files(out):
        return
    try:
        with open_uri(manifest, "rb") as f:
            recorded = json.load(f).get("config", {}).get("align") or {}
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError("--out", f"{manifest} cannot be read ({type(e).__name__}), so a rerun cannot be "
                          "checked against the faces there; use a new --out") from None
    if not isinstance(recorded, dict):
        raise ConfigError("--out", f"{manifest} records no align options, so a rerun cannot be checked against "
                          "the faces there; use a new --out")
    asked = dataclasses.asdict(align)
    differ = [k for k in ALIGN_FIELDS if recorded.get(k) is not None and recorded[k] != asked[k]]
    if "jpeg_quality" in differ and recorded.get("image_format") == asked["image_format"] == "png":
        differ.remove("jpeg_quality")
    if differ:
        raise ConfigError(", ".join(f"align.{k}" for k in differ),
                          f"--out {out} holds faces extracted with "
                          f"{', '.join(f'align.{k}={recorded[k]}' for k in differ)} (this run: "
                          f"{', '.join(str(asked[k]) for k in differ)}); one faceset has one alignment: "
                          "use a new --out, or the same align options to add to it")

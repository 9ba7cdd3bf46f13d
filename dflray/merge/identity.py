"""Who is swapped and who the swap should look like: the identities a merge run compares faces with.

``reference_embedding`` reads the reference image of ``identity.swap=reference``; ``source_identity`` is the
identity ``quality.measure`` checks merged faces against (the dominant person of the src faceset). Both
run on the driver, before any video is merged, so a bad option fails early.
"""

from __future__ import annotations

import numpy as np

from dflray.config import ConfigError, MergeConfig
from dflray.io.storage import exists, fs_and_path, join, open_uri

__all__ = ["reference_embedding", "source_identity"]


def reference_embedding(uri: str) -> np.ndarray:
    """dlib descriptor of the largest face in a reference image (for ``identity.swap=reference``)."""
    import cv2

    from dflray.config import DetectConfig, LandmarkConfig
    from dflray.detect import build_detector, build_landmarker
    from dflray.detect.dlib_models import IdentityEmbedder

    with open_uri(uri) as f:
        data = np.frombuffer(f.read(), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"identity.reference: {uri} is not a readable image")
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    dets = build_detector(DetectConfig()).detect([rgb])[0]
    if len(dets) == 0:
        raise ValueError(f"identity.reference: no face found in {uri}")
    i = int(np.argmax((dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])))
    lm = build_landmarker(LandmarkConfig()).landmarks(rgb, dets.boxes[i:i + 1])
    return IdentityEmbedder().embed(rgb, lm)[0].astype(np.float64)


def _training_src(model: str) -> str | None:
    """The src faceset in the ``train_config.yaml`` of the training output ``model`` belongs to, if any.

    ``model`` may be the training output, its run folder, a checkpoint folder or its ``model.pt``, or an
    export written inside the training output: the file is looked for there and up to three folders up.
    """
    import posixpath

    import yaml

    fs, path = fs_and_path(model)
    path = path.rstrip("/")
    for _ in range(4):
        cand = posixpath.join(path, "train_config.yaml")
        if fs.isfile(cand):
            with fs.open(cand, "rb") as f:
                doc = yaml.safe_load(f) or {}
            src = doc.get("src") if isinstance(doc, dict) else None
            return src if isinstance(src, str) and src else None
        parent = posixpath.dirname(path)
        if not parent or parent == path:
            break
        path = parent
    return None


def source_identity(cfg: MergeConfig, model: str) -> tuple[np.ndarray, str] | None:
    """The source identity ``quality.measure`` compares merged faces with, checked before any work.

    It is the mean descriptor of the dominant person (``identity.threshold``) of the src faceset:
    ``quality.source``, else the ``src`` of the training output ``model`` comes from.

    Returns:
        ((128,) descriptor, the faceset's URI), or None when ``quality`` is off.

    Raises:
        ConfigError: naming ``quality.source`` when no src faceset is given or found, it is not a faceset,
            or it has no identity embeddings.
    """
    if not cfg.quality.enabled:
        return None
    from dflray.faceset import read_faces
    from dflray.merge.video import select_faces

    source = cfg.quality.source or _training_src(model)
    if not source:
        raise ConfigError("quality.source", f"--model {model} records no training src faceset (no "
                          "train_config.yaml beside it or above it); give quality.source=FACESET")
    if not exists(join(source, "faceset.json")):
        raise ConfigError("quality.source", f"{source} is not a faceset (no faceset.json); give the src faceset "
                          "written by dflray extract")
    col = read_faces(source, columns=["embedding"]).column("embedding")
    emb = np.asarray([e for e in col.to_pylist() if e is not None], np.float64).reshape(-1, 128)
    emb = emb[np.isfinite(emb).all(1)]
    if not len(emb):
        raise ConfigError("quality.source", f"{source} has no identity embeddings (extract it with "
                          "landmarks.embedding=true)")
    # Every face counts as its own frame: the src faceset's stray faces (a bystander) are left out by
    # identity, not by which frame they share.
    keep = select_faces(np.arange(len(emb)), emb, "dominant", threshold=cfg.identity.threshold)
    return emb[keep].mean(0), source

"""Contact sheet of a faceset: aligned crops with their landmarks and hull-mask outline drawn."""

from __future__ import annotations

import cv2
import numpy as np

from dflray.extract.stages import decode_image, encode_image
from dflray.face.align import transform_points
from dflray.faceset import read_faces
from dflray.io import schema
from dflray.io.storage import atomic_write


def draw_face(crop: np.ndarray, landmarks_crop: np.ndarray, mask: np.ndarray | None, label: str = "") -> np.ndarray:
    """Returns a copy of an RGB crop with its 68 landmarks (green), mask outline (yellow) and a label."""
    img = crop.copy()
    if mask is not None:
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, (255, 220, 0), max(1, img.shape[0] // 160))
    r = max(1, img.shape[0] // 128)
    for x, y in landmarks_crop:
        cv2.circle(img, (int(round(x)), int(round(y))), r, (0, 255, 0), -1, cv2.LINE_AA)
    if label:
        cv2.putText(img, label, (4, img.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, img.shape[0] / 420,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return img


def contact_sheet(faceset: str, out: str, n: int = 48, cols: int = 8, tile: int = 160) -> int:
    """Writes a PNG grid of up to ``n`` faces spread evenly over the faceset; returns how many were drawn.

    Example:
        >>> contact_sheet("facesets/a", "grid.png", n=16)  # doctest: +SKIP
    """
    if n < 1 or cols < 1 or tile < 16:
        raise ValueError("preview: --n and --cols must be >= 1 and --tile >= 16")
    faces = read_faces(faceset, columns=["video_id", "frame_index", "face_index", "image", "mask", "landmarks",
                                         "align_mat", "det_score"])
    if faces.num_rows == 0:
        raise ValueError(f"preview: faceset {faceset} has no faces")
    pick = np.unique(np.linspace(0, faces.num_rows - 1, min(n, faces.num_rows)).round().astype(int))
    faces = faces.take(pick)
    lms = schema.landmarks_of(faces)
    mats = schema.matrices_of(faces).astype(np.float64)
    tiles = []
    for i in range(faces.num_rows):
        crop = decode_image(faces.column("image")[i].as_py())
        mask = decode_image(faces.column("mask")[i].as_py())
        label = f"{faces.column('video_id')[i].as_py()[:6]} #{faces.column('frame_index')[i].as_py()}"
        img = draw_face(crop, transform_points(lms[i], mats[i]), mask, label)
        tiles.append(cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA))
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((rows * tile, min(cols, len(tiles)) * tile, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = t
    with atomic_write(out, "wb") as f:
        f.write(encode_image(sheet, "png"))
    return len(tiles)

"""FaceMeasurer (dflray.quality.measure) on real faces and videos: identity, swap success, end to end."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pyarrow as pa
import pytest

from dflray.config import QUALITY_METRICS, DetectConfig
from dflray.io import schema
from dflray.quality import SAME_PERSON_THRESHOLD, FaceMeasurer, frame_swapped, identity_distance, swap_success
from dflray.sample import load_portrait
from tests.media import shared_media


@pytest.fixture(scope="module")
def measurer() -> FaceMeasurer:
    return FaceMeasurer()


# ------------------------------------------------------------------------------------ identity


def test_identity_same_person_close_different_person_far(measurer):
    astronaut, hopper = load_portrait("astronaut"), load_portrait("grace_hopper")
    moved = cv2.warpAffine(astronaut, np.float32([[0.8, 0, 40], [0, 0.8, 30]]), astronaut.shape[1::-1],
                           borderMode=cv2.BORDER_REPLICATE)
    ea, em, eh = (measurer.image_embedding(x) for x in (astronaut, moved, hopper))
    assert identity_distance(ea, em) < 0.6
    assert identity_distance(ea, eh) > 0.6


def test_identity_on_real_photos(measurer):
    def read(name):
        return cv2.cvtColor(cv2.imread(shared_media(name)), cv2.COLOR_BGR2RGB)

    o1, o2, biden = (measurer.image_embedding(read(n)) for n in ("obama_1.jpg", "obama_2.jpg", "biden.jpg"))
    assert identity_distance(o1, o2) < 0.6
    assert identity_distance(o1, biden) > 0.6
    assert identity_distance(o2, biden) > 0.6


def test_image_without_a_face_has_no_embedding(measurer):
    assert measurer.image_embedding(np.full((200, 200, 3), 128, np.uint8)) is None


# ------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    """A crude but real face swap: Grace Hopper's aligned face pasted over the sample clip's astronaut.

    Per frame the astronaut's face is detected (dlib HOG) and landmarked; Hopper's aligned crop is warped
    onto those landmarks and pasted inside their hull, which is also the frame's manipulation mask.
    Returns the fake, real and mask URIs and the destination faces ``{frame_index, bbox}``.
    """
    from dflray.config import LandmarkConfig
    from dflray.detect import build_detector
    from dflray.detect.dlib_models import Dlib68Landmarker
    from dflray.face import get_transform_mat, hull_mask, warp_to_crop, warp_to_frame
    from dflray.io.video import Transcoder
    from dflray.sample import make_sample

    tmp = tmp_path_factory.mktemp("swap")
    real = make_sample(str(tmp / "real"), seconds=1, size=256, names=("astronaut",))[0]
    det = build_detector(DetectConfig(detector="dlib-hog"))
    lmk = Dlib68Landmarker(LandmarkConfig())
    hopper = load_portrait("grace_hopper")
    hopper_lm = lmk.landmarks(hopper, det.detect([hopper])[0].boxes[:1])[0]
    crop = warp_to_crop(hopper, get_transform_mat(hopper_lm, 256, "full"), 256)
    frame_index, bbox = [], []
    fake, mask_path = str(tmp / "fake.mp4"), str(tmp / "mask.mp4")
    with Transcoder(real, fake, mask_path=mask_path) as t:
        for f in t.frames():
            boxes = det.detect([f.rgb])[0].boxes
            mask = np.zeros(f.rgb.shape[:2], np.uint8)
            out = f.rgb
            if len(boxes):
                frame_index.append(f.index)
                bbox.append(boxes[0])
                lm = lmk.landmarks(f.rgb, boxes[:1])[0]
                mask = hull_mask(f.rgb.shape, lm) * 255
                warped = warp_to_frame(crop, get_transform_mat(lm, 256, "full"), f.rgb.shape)
                out = np.where(mask[..., None] > 0, warped, f.rgb).astype(np.uint8)
            t.write(f, out, mask)
    return fake, real, mask_path, {"frame_index": np.array(frame_index), "bbox": np.array(bbox)}


def test_measure_fake_end_to_end(swapped, measurer):
    fake, real, mask, dst = swapped
    assert len(dst["frame_index"]) >= 20
    src = measurer.image_embedding(load_portrait("grace_hopper"))
    m = measurer.measure_fake(fake, real, mask, dst, src, sample_frames=4)
    assert set(m) == set(QUALITY_METRICS)
    assert all(v is not None and math.isfinite(v) for v in m.values()), m
    # The swap carries Hopper's identity and the astronaut's is gone; head pose and expression are kept.
    assert m["id_distance_source"] < 0.6 < m["id_distance_target"]
    assert m["swap_success"] == 1.0  # re-detected in the fake, the face reads as Hopper in every sampled frame
    assert m["pose_error"] < 5.0 and m["expression_error"] < 0.1
    # A hard-edged paste of a still face: the edge shows, and the face jitters with the landmarks.
    assert m["seam"] > 1.2
    assert m["flicker"] > 1.0
    # The real video measured against itself (faces as a faceset Arrow table): the same person, as
    # stable as itself, no seam.
    table = pa.table({"frame_index": pa.array(dst["frame_index"], pa.int32()),
                      "bbox": pa.array(dst["bbox"].tolist(), schema.FACES.field("bbox").type)})
    same = measurer.measure_fake(real, real, mask, table, None, sample_frames=2)
    assert same["id_distance_source"] is None and same["swap_success"] is None
    assert same["flicker"] == pytest.approx(0.0, abs=1e-6) and same["seam"] == pytest.approx(1.0)
    assert same["id_distance_target"] == pytest.approx(0.0, abs=1e-6)
    assert same["pose_error"] == pytest.approx(0.0, abs=1e-6) and same["expression_error"] == pytest.approx(0.0)


def test_measure_fake_without_faces_measures_only_the_mask_metrics(swapped, measurer):
    fake, real, mask, _ = swapped
    m = measurer.measure_fake(fake, real, mask, {"frame_index": np.zeros(0, int), "bbox": np.zeros((0, 4))},
                              None)
    assert m["id_distance_target"] is None and m["pose_error"] is None and m["expression_error"] is None
    assert m["swap_success"] is None  # no sampled frame: nothing to judge (not a failure)
    assert m["flicker"] is not None and m["seam"] is not None
    with pytest.raises(ValueError, match="sample_frames"):
        measurer.measure_fake(fake, real, mask, {"frame_index": [], "bbox": []}, None, sample_frames=0)
    with pytest.raises(ValueError, match="frame_index and bbox"):
        measurer.measure_fake(fake, real, mask, {"bbox": []}, None)


def test_measure_fake_rejects_videos_out_of_step(swapped, measurer, tmp_path):
    from tests.media import write_video

    fake, real, mask, dst = swapped
    short = write_video(tmp_path / "short.mp4", [np.zeros((256, 256, 3), np.uint8)] * 5)
    with pytest.raises(ValueError, match="differ in frame count"):
        measurer.measure_fake(short, real, mask, dst, None)


# ------------------------------------------------------------------------------------ swap success


def _photo(name: str, width: int = 320) -> np.ndarray:
    """A photo of ../shared/media as RGB, scaled to ``width`` and cut to even sides (for H.264)."""
    bgr = cv2.imread(shared_media(name))
    scale = width / bgr.shape[1]
    img = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(img[:img.shape[0] // 2 * 2, :width], cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="module")
def people(measurer) -> dict[str, np.ndarray]:
    """dlib descriptors of real photos: two of Obama (one person) and one of Biden (another)."""
    emb = {n: measurer.image_embedding(_photo(f"{n}.jpg")) for n in ("obama_1", "obama_2", "biden")}
    assert all(e is not None for e in emb.values()), "no face found in a shared photo"
    return emb


def test_swap_success_on_real_descriptors(people):
    o1, o2, biden = people["obama_1"], people["obama_2"], people["biden"]
    # Obama is the source (his second photo); Biden's face is the destination.
    assert swap_success([biden, biden], [biden, biden], o2) == 0.0  # the unchanged destination
    assert swap_success([o1], [biden], o2) == 1.0  # the source's own face in place of Biden's
    assert swap_success([o1, None, o1, None], [biden] * 4, o2) == 0.5  # no face found: a failure, not missing
    assert swap_success([], [], o2) is None
    # Both conditions count: a frame left as the destination is no swap even when the destination is the
    # source person (nearer the source than... itself fails), and a threshold tighter than the pair's
    # distance rejects it.
    assert swap_success([o1], [o1], o2) == 0.0
    assert identity_distance(o1, o2) > 0.3 and swap_success([o1], [biden], o2, threshold=0.3) == 0.0
    # (N, 128) source descriptors are averaged into the identity.
    assert swap_success([o1, biden], [biden, biden], np.stack([o1, o2])) == 0.5
    assert frame_swapped(o1, biden, o2) and not frame_swapped(None, biden, o2)
    assert SAME_PERSON_THRESHOLD == 0.6


def test_swap_success_rejects_bad_input(people):
    o2, biden = people["obama_2"], people["biden"]
    with pytest.raises(ValueError, match="differ in length"):
        swap_success([biden], [], o2)
    with pytest.raises(ValueError, match=r"real_embeddings\[0\] is None"):
        swap_success([biden], [None], o2)
    with pytest.raises(ValueError, match="source embedding"):
        swap_success([biden], [biden], np.zeros(64))
    with pytest.raises(ValueError, match="threshold"):
        frame_swapped(biden, biden, o2, threshold=0.0)


@pytest.fixture(scope="module")
def photo_swaps(tmp_path_factory, measurer):
    """A 4-frame clip of Biden (a slow pan over biden.jpg) and fakes of it, each with its mask video.

    ``unchanged``: the clip re-encoded untouched. ``swapped``: Obama's face (obama_1.jpg), aligned and
    warped onto Biden's landmarks in every frame and pasted inside their hull, as a face swap does.
    ``blank``: the swap, with frame 2 replaced by a flat grey frame (no face to find). ``blurred``: no swap,
    Biden's own face blurred inside the hull (Gaussian, sigma 5% of the face box's width): what blur alone
    does to the identity metrics. The mask is Biden's
    landmark hull in every frame. Returns the URIs and the destination faces ``{frame_index, bbox}``
    found by the measurer's own detector (the extraction's default).
    """
    from dflray.face import get_transform_mat, hull_mask, warp_to_crop, warp_to_frame
    from dflray.io.video import Transcoder, decode_range
    from tests.media import write_video

    tmp = tmp_path_factory.mktemp("photo-swap")
    biden = _photo("biden.jpg")[:320]
    obama = _photo("obama_1.jpg")
    frames = [cv2.warpAffine(biden, np.float32([[1, 0, 3 * i], [0, 1, 2 * i]]), (320, 320),
                             borderMode=cv2.BORDER_REPLICATE) for i in range(4)]
    real = write_video(tmp / "real.mp4", frames)

    def face(rgb):
        d = measurer._detect(rgb)
        assert len(d.boxes), "no face found in the photo"
        p5 = d.points5[:1] if d.points5 is not None else None
        return d.boxes[0], measurer.landmarker.landmarks(rgb, d.boxes[:1], p5)[0]

    _, obama_lm = face(obama)
    crop = warp_to_crop(obama, get_transform_mat(obama_lm, 256, "full"), 256)
    boxes = {i: face(f)[0] for i, f in decode_range(real)}
    out = {"real": real}
    for kind in ("unchanged", "swapped", "blank", "blurred"):
        fake, mask_path = str(tmp / f"{kind}.mp4"), str(tmp / f"{kind}_mask.mp4")
        with Transcoder(real, fake, mask_path=mask_path) as t:
            for f in t.frames():
                _, lm = face(f.rgb)
                mask = hull_mask(f.rgb.shape, lm) * 255
                rgb = f.rgb
                if kind == "blurred":
                    box = boxes[f.index]
                    soft = cv2.GaussianBlur(f.rgb, (0, 0), 0.05 * (box[2] - box[0]))
                    rgb = np.where(mask[..., None] > 0, soft, f.rgb).astype(np.uint8)
                elif kind != "unchanged":
                    warped = warp_to_frame(crop, get_transform_mat(lm, 256, "full"), f.rgb.shape)
                    rgb = np.where(mask[..., None] > 0, warped, f.rgb).astype(np.uint8)
                if kind == "blank" and f.index == 2:
                    rgb = np.full_like(f.rgb, 128)
                t.write(f, rgb, mask)
        out[kind] = (fake, mask_path)
    out["dst"] = {"frame_index": np.array(sorted(boxes)), "bbox": np.array([boxes[i] for i in sorted(boxes)])}
    return out


def test_measure_fake_swap_success_on_real_faces(photo_swaps, people, measurer):
    real, dst, source = photo_swaps["real"], photo_swaps["dst"], people["obama_2"]
    assert len(dst["frame_index"]) == 4

    def measure(kind, src=source):
        fake, mask = photo_swaps[kind]
        return measurer.measure_fake(fake, real, mask, dst, src, sample_frames=4)

    unchanged, swapped, blank = measure("unchanged"), measure("swapped"), measure("blank")
    assert unchanged["swap_success"] == 0.0
    assert swapped["swap_success"] == 1.0
    assert swapped["id_distance_source"] < SAME_PERSON_THRESHOLD < swapped["id_distance_target"]
    # The blank frame has no face to re-detect: one failure in four sampled frames, not a missing frame.
    assert blank["swap_success"] == 0.75
    # The distance metrics keep reading the face box as before, blank frame included.
    assert blank["id_distance_source"] is not None and blank["id_distance_target"] is not None
    assert measure("swapped", src=None)["swap_success"] is None
    # detail: the untouched face is as detailed as itself, a sharp pasted face keeps most of it.
    assert unchanged["detail"] == pytest.approx(1.0, abs=0.05)
    assert swapped["detail"] > 0.5


def test_measure_fake_a_blurred_destination_is_no_swap(photo_swaps, people, measurer):
    """Blur moves dlib's descriptor: the blur guard judges a soft fake against the real face blurred alike."""
    from dflray.quality.metrics import DETAIL_MATCH

    fake, mask = photo_swaps["blurred"]
    m = measurer.measure_fake(fake, photo_swaps["real"], mask, photo_swaps["dst"], people["obama_2"],
                              sample_frames=4)
    assert m["detail"] < DETAIL_MATCH / 2  # soft enough for the guard to apply
    assert m["id_distance_target"] > 0.0  # the blur did move the descriptor away from the sharp face
    assert m["swap_success"] == 0.0


def test_detect_at_needs_a_face_overlapping_the_box(photo_swaps, measurer):
    from dflray.io.video import decode_range

    (_, frame), = list(decode_range(photo_swaps["real"], 0, 1))
    box = photo_swaps["dst"]["bbox"][0]
    lm, emb = measurer.detect_at(frame, box)
    assert lm.shape == (68, 2) and emb.shape == (128,)
    assert measurer.detect_at(np.full_like(frame, 128), box) is None  # no face at all
    assert measurer.detect_at(frame, np.array([0, 240, 80, 320])) is None  # a box in a corner, off the face

"""Reading DeepFaceLab aligned JPEGs: every field round-trips, XSeg labels follow DFL, bad files become
error entries, and a crafted metadata pickle is refused without running anything.

The DFL-format files are built here: skimage's astronaut (dflray's sample portrait) aligned with dlib's
68 landmarks, with DFL's metadata dict (as DFL's extractor and XSeg editor write it) in an APP15 segment.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import uuid

import cv2
import fsspec
import numpy as np
import pytest

from dflray.extract.dfl_import import (
    DFL_FACE_TYPES,
    MAX_FILE_BYTES,
    DflMetadataError,
    dfl_face_type,
    face_row,
    iter_aligned,
    parse_dfl_face,
    polys_to_mask,
    read_dfl_metadata,
    write_dfl_jpeg,
    xseg_label,
)
from dflray.extract.stages import decode_image
from dflray.face.align import get_transform_mat, transform_points, warp_to_crop
from dflray.face.masks import hull_mask
from dflray.io import schema
from dflray.sample import load_portrait
from tests.media import ASTRONAUT_LM

# dlib's 68 landmarks on skimage's astronaut (dflray's built-in sample portrait), frame pixels.
_ASTRONAUT_LM = np.asarray(ASTRONAUT_LM, np.float64)
SIZE = 192
_NP_SCALAR = np.float32(0).__reduce__()[0]  # numpy's scalar-rebuilding function, whatever its module
INCLUDE = [[20.5, 20.5], [170.0, 20.0], [170.0, 170.0], [20.0, 170.0]]
EXCLUDE = [[80.0, 80.0], [110.0, 80.0], [110.0, 110.0], [80.0, 110.0]]


def _aligned(face_type: str = "whole_face"):
    frame = load_portrait("astronaut")
    mat = get_transform_mat(_ASTRONAUT_LM, SIZE, face_type)
    return frame, mat, warp_to_crop(frame, mat, SIZE), transform_points(_ASTRONAUT_LM, mat)


def _disc_png(res: int = 128) -> np.ndarray:
    """An XSeg mask as DFL's apply step stores it: a uint8 array of PNG bytes at the model's resolution."""
    mask = np.zeros((res, res), np.uint8)
    cv2.circle(mask, (res // 2, res // 2), res // 3, 255, -1)
    return cv2.imencode(".png", mask)[1]


def _meta(face_type: str = "whole_face", **extra) -> tuple[np.ndarray, dict]:
    """An aligned crop and the dict DFL's extractor + XSeg editor + XSeg apply would embed."""
    _, mat, crop, crop_lm = _aligned(DFL_FACE_TYPES.get(face_type, "whole_face"))
    meta = {
        "face_type": face_type,
        "landmarks": crop_lm.tolist(),  # DFL stores lists here
        "source_filename": "00042.png",
        "source_rect": np.array([175, 80, 275, 185]),  # DFL stores np.array(rect)
        "source_landmarks": _ASTRONAUT_LM.tolist(),
        "image_to_face_mat": mat,
        "eyebrows_expand_mod": 1.0,
        "seg_ie_polys": {"polys": [{"type": 1, "pts": np.float32(INCLUDE)},
                                   {"type": 0, "pts": np.float32(EXCLUDE)}]},
        "xseg_mask": _disc_png(),
    }
    meta.update(extra)
    return crop, meta


def _with_app15(payload: bytes, rgb: np.ndarray | None = None) -> bytes:
    """A JPEG whose APP15 segment holds ``payload`` verbatim (for crafted pickles)."""
    rgb = np.zeros((32, 32, 3), np.uint8) if rgb is None else rgb
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    return jpeg[:2] + b"\xff\xef" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


# ------------------------------------------------------------------------------------------------
# round trip


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_field_round_trips(protocol):
    crop, meta = _meta()
    face = parse_dfl_face("00042_0.jpg", write_dfl_jpeg(crop, meta, quality=98, protocol=protocol))
    assert face.name == "00042_0.jpg"
    assert face.image.shape == (SIZE, SIZE, 3) and face.image.dtype == np.uint8
    assert np.abs(face.image.astype(int) - crop).mean() < 3  # JPEG, not bit-exact
    assert face.face_type == "whole_face"
    assert face.landmarks.dtype == np.float32
    np.testing.assert_allclose(face.landmarks, meta["landmarks"], atol=1e-4)
    assert face.source_filename == "00042.png"
    assert face.source_rect == (175.0, 80.0, 275.0, 185.0)
    np.testing.assert_allclose(face.source_landmarks, _ASTRONAUT_LM)
    np.testing.assert_array_equal(face.image_to_face_mat, meta["image_to_face_mat"])
    assert face.xseg_polys == [{"type": "include", "points": INCLUDE}, {"type": "exclude", "points": EXCLUDE}]
    assert face.eyebrows_expand_mod == 1.0
    # The stored 128 px mask comes back at the image size, still 0/255, the disc in the middle.
    assert face.xseg_mask.shape == (SIZE, SIZE) and set(np.unique(face.xseg_mask)) == {0, 255}
    assert face.xseg_mask[SIZE // 2, SIZE // 2] == 255 and face.xseg_mask[2, 2] == 0
    assert abs((face.xseg_mask > 0).mean() - np.pi / 9) < 0.02


def test_metadata_dict_is_plain_and_segment_sits_after_the_app_segments():
    crop, meta = _meta(eyebrows_expand_mod=np.float32(1.5))
    data = write_dfl_jpeg(crop, meta)
    assert data[2:4] == b"\xff\xe0"  # JFIF's APP0 first, DFL's APP15 right after it
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    assert data[app0_end:app0_end + 2] == b"\xff\xef"
    got = read_dfl_metadata(data)
    assert set(got) == set(meta)
    assert type(got["eyebrows_expand_mod"]) is float and got["eyebrows_expand_mod"] == 1.5
    assert type(got["source_rect"]) is np.ndarray and got["source_rect"].tolist() == [175, 80, 275, 185]
    assert type(got["seg_ie_polys"]["polys"][0]["pts"]) is np.ndarray
    np.testing.assert_array_equal(got["xseg_mask"], meta["xseg_mask"])


def test_numpy_1_module_names_are_read():
    # numpy 1.x pickles name numpy.core.multiarray; numpy 2 writes numpy._core. Both must load.
    _, meta = _meta()
    payload = pickle.dumps(meta, protocol=3)
    old = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != payload
    got = read_dfl_metadata(_with_app15(old))
    np.testing.assert_array_equal(got["image_to_face_mat"], meta["image_to_face_mat"])


def test_legacy_list_polys_and_dfl_load_order():
    # Old files store [(type, pts), ...]; DFL's loader sorts include polygons before exclude ones, so an
    # exclude saved first still cuts its hole out of a later include.
    crop, meta = _meta(seg_ie_polys=[(0, np.float32(EXCLUDE)), (1, np.float32(INCLUDE))], xseg_mask=None)
    face = parse_dfl_face("a.jpg", write_dfl_jpeg(crop, meta))
    assert [p["type"] for p in face.xseg_polys] == ["include", "exclude"]
    label = xseg_label(face)
    assert label[50, 50] == 255 and label[95, 95] == 0


@pytest.mark.parametrize("dfl_name,ours", sorted(DFL_FACE_TYPES.items()))
def test_face_types_map(dfl_name, ours):
    crop, meta = _meta(dfl_name)
    assert parse_dfl_face("a.jpg", write_dfl_jpeg(crop, meta)).face_type == ours
    assert dfl_face_type(ours) == dfl_name


def test_face_type_default_and_unsupported():
    crop, meta = _meta()
    del meta["face_type"]
    assert parse_dfl_face("a.jpg", write_dfl_jpeg(crop, meta)).face_type == "full"  # DFL's default
    for name in ("mark_only", "head_no_align", "full_face_no_align", "banana"):
        with pytest.raises(DflMetadataError, match="unsupported DFL face_type"):
            parse_dfl_face("a.jpg", write_dfl_jpeg(crop, {**meta, "face_type": name}))


def test_missing_landmarks_and_bad_matrix_are_errors():
    crop, meta = _meta()
    with pytest.raises(DflMetadataError, match="no landmarks"):
        parse_dfl_face("a.jpg", write_dfl_jpeg(crop, {k: v for k, v in meta.items() if k != "landmarks"}))
    with pytest.raises(DflMetadataError, match="landmarks must be 68"):
        parse_dfl_face("a.jpg", write_dfl_jpeg(crop, {**meta, "landmarks": [[1.0, 2.0]] * 5}))
    with pytest.raises(DflMetadataError, match="image_to_face_mat"):
        parse_dfl_face("a.jpg", write_dfl_jpeg(crop, {**meta, "image_to_face_mat": np.zeros((2, 3))}))


# ------------------------------------------------------------------------------------------------
# XSeg labels


def test_polys_to_mask_exclude_cuts_a_hole_in_order():
    inc = {"type": "include", "points": [[10, 10], [90, 10], [90, 90], [10, 90]]}
    exc = {"type": "exclude", "points": [[40, 40], [60, 40], [60, 60], [40, 60]]}
    m = polys_to_mask([inc, exc], (100, 120))
    assert m.shape == (100, 120) and m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
    assert m[20, 20] == 255 and m[50, 50] == 0 and m[5, 5] == 0 and m[50, 100] == 0
    # Order matters: an include drawn after the exclude fills the hole again.
    assert polys_to_mask([exc, inc], (100, 120))[50, 50] == 255
    # Points are truncated like DFL's int32 cast: x = 9.9 starts at column 9.
    edge = polys_to_mask([{"type": "include", "points": [[9.9, 9.9], [20, 9.9], [20, 20], [9.9, 20]]}], (30, 30))
    assert edge[15, 9] == 255 and edge[15, 8] == 0
    with pytest.raises(ValueError, match=r"polys\[0\].type"):
        polys_to_mask([{"type": "keep", "points": [[0, 0]]}], (4, 4))


def test_xseg_label_prefers_polygons_then_stored_mask():
    crop, meta = _meta()
    face = parse_dfl_face("a.jpg", write_dfl_jpeg(crop, meta))
    np.testing.assert_array_equal(xseg_label(face), polys_to_mask(face.xseg_polys, (SIZE, SIZE)))
    only_mask = parse_dfl_face("a.jpg", write_dfl_jpeg(crop, {**meta, "seg_ie_polys": None}))
    assert only_mask.xseg_polys == [] and xseg_label(only_mask) is only_mask.xseg_mask
    neither = parse_dfl_face("a.jpg", write_dfl_jpeg(crop, {**meta, "seg_ie_polys": None, "xseg_mask": None}))
    assert xseg_label(neither) is None and neither.xseg_mask is None


def test_jpeg_stored_xseg_mask_is_binarised():
    # DFL falls back to a JPEG when the PNG is over 50,000 bytes; JPEG ringing must not leak into the label.
    mask = np.zeros((256, 256), np.uint8)
    mask[64:192, 64:192] = 255
    crop, meta = _meta(seg_ie_polys=None, xseg_mask=cv2.imencode(".jpg", mask, [cv2.IMWRITE_JPEG_QUALITY, 60])[1])
    face = parse_dfl_face("a.jpg", write_dfl_jpeg(crop, meta))
    assert set(np.unique(face.xseg_mask)) == {0, 255}
    expect = cv2.resize(mask, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    assert (face.xseg_mask != expect).mean() < 0.01


# ------------------------------------------------------------------------------------------------
# faces rows


def test_face_row_with_source_geometry():
    crop, meta = _meta()
    face = parse_dfl_face("00042_0.jpg", write_dfl_jpeg(crop, meta))
    row = face_row(face, video_id="dfl_src", frame_index=7, source_uri="file:///aligned/00042_0.jpg")
    assert (row["detector"], row["landmarker"], row["face_type"], row["size"]) == ("dfl-import", "dfl",
                                                                                 "whole_face", SIZE)
    np.testing.assert_allclose(row["landmarks"], _ASTRONAUT_LM)
    np.testing.assert_array_equal(row["align_mat"], meta["image_to_face_mat"])
    # Extraction's contract: frame landmarks through align_mat land on the aligned landmarks.
    np.testing.assert_allclose(transform_points(row["landmarks"], row["align_mat"]), face.landmarks, atol=1e-3)
    assert row["bbox"].tolist() == [175, 80, 275, 185] and row["frame_width"] is None
    # The image is the stored JPEG without DFL's pickle: same pixels, no APP15 segment left.
    with pytest.raises(DflMetadataError, match="no DFL metadata"):
        read_dfl_metadata(row["image"])
    np.testing.assert_array_equal(decode_image(row["image"]), face.image)
    np.testing.assert_array_equal(decode_image(row["mask"]), hull_mask((SIZE, SIZE), face.landmarks) * 255)
    assert row["mask_source"] == "hull" and row["embedding"] is None
    assert all(np.isfinite([row["yaw"], row["pitch"], row["roll"]])) and abs(row["yaw"]) < 30
    assert row["blur"] > 0
    assert json.loads(row["xseg_polys"]) == face.xseg_polys
    np.testing.assert_array_equal(decode_image(row["xseg_label"]), xseg_label(face))
    # The row fits the faces schema, XSeg columns included.
    table = schema.table_from_rows("faces", [row])
    assert table.num_rows == 1 and table.column("detector")[0].as_py() == "dfl-import"
    assert table.column("xseg_label")[0].as_py() == row["xseg_label"]
    assert table.column("xseg_polys")[0].as_py() == row["xseg_polys"]
    np.testing.assert_allclose(schema.landmarks_of(table)[0], _ASTRONAUT_LM)


def test_face_row_without_source_uses_the_aligned_image_as_frame():
    crop, meta = _meta(seg_ie_polys=None, xseg_mask=None)
    for key in ("source_landmarks", "image_to_face_mat", "source_rect", "source_filename"):
        del meta[key]
    face = parse_dfl_face("x.jpg", write_dfl_jpeg(crop, meta))
    assert face.source_landmarks is None and face.image_to_face_mat is None and face.source_rect is None
    row = face_row(face, video_id="v", frame_index=0, source_uri="x.jpg")
    np.testing.assert_array_equal(row["align_mat"], np.eye(2, 3))
    np.testing.assert_allclose(row["landmarks"], face.landmarks)
    assert (row["frame_width"], row["frame_height"]) == (SIZE, SIZE)
    assert row["xseg_polys"] is None and row["xseg_label"] is None
    assert schema.table_from_rows("faces", [row]).num_rows == 1


def test_face_row_ignores_source_geometry_that_disagrees_with_the_image():
    crop, meta = _meta()
    moved = meta["image_to_face_mat"].copy()
    moved[:, 2] += 15  # aligned landmarks no longer match the mapped source landmarks
    face = parse_dfl_face("x.jpg", write_dfl_jpeg(crop, {**meta, "image_to_face_mat": moved}))
    row = face_row(face, video_id="v", frame_index=0, source_uri="x.jpg")
    np.testing.assert_array_equal(row["align_mat"], np.eye(2, 3))
    np.testing.assert_allclose(row["landmarks"], face.landmarks)


def test_out_of_range_numbers_are_metadata_errors():
    crop, meta = _meta()
    for bad in ({"eyebrows_expand_mod": 10 ** 400}, {"source_rect": [10 ** 400, 0, 1, 1]},
                {"seg_ie_polys": {"polys": [{"type": 1, "pts": [[10 ** 400, 0]]}]}},
                {"xseg_mask": np.frombuffer(b"GIF89a" + bytes(20), np.uint8)}):
        with pytest.raises(DflMetadataError):
            parse_dfl_face("a.jpg", write_dfl_jpeg(crop, {**meta, **bad}))


# ------------------------------------------------------------------------------------------------
# bad files


def test_iter_aligned_reports_bad_files_and_reads_the_rest(tmp_path):
    crop, meta = _meta()
    good = write_dfl_jpeg(crop, meta)
    plain = cv2.imencode(".jpg", crop)[1].tobytes()
    files = {
        "00001_0.jpg": good,
        "00002_0.jpg": plain,  # a JPEG without DFL metadata
        "00003_0.jpg": good[: len(good) // 2],  # cut inside the image data
        "00004_0.jpg": good[:30],  # cut inside the metadata segment
        "00005_0.jpg": cv2.imencode(".png", crop)[1].tobytes(),  # not a JPEG at all
        "00006_0.JPEG": good,
        "notes.txt": b"not an image",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = list(iter_aligned(str(tmp_path)))
    assert [os.path.basename(u) for u, _, _ in out] == sorted(n for n in files if n != "notes.txt")
    by_name = {os.path.basename(u): (face, err) for u, face, err in out}
    for name in ("00001_0.jpg", "00006_0.JPEG"):
        face, err = by_name[name]
        assert err is None and face.name == name and face.face_type == "whole_face"
    expected = {"00002_0.jpg": "no DFL metadata", "00003_0.jpg": "truncated JPEG",
                "00004_0.jpg": "truncated JPEG", "00005_0.jpg": "not a JPEG"}
    for name, text in expected.items():
        face, err = by_name[name]
        assert face is None and err.startswith("DflMetadataError: ") and text in err, (name, err)


def test_iter_aligned_reads_fsspec_urls():
    crop, meta = _meta()
    root = f"memory://dfl-{uuid.uuid4().hex}/aligned"
    fs = fsspec.filesystem("memory")
    fs.pipe(root.split("://")[1] + "/00001_0.jpg", write_dfl_jpeg(crop, meta))
    (uri, face, err), = iter_aligned(root)
    assert uri.startswith("memory://") and err is None and face.name == "00001_0.jpg"


def test_size_limits():
    with pytest.raises(DflMetadataError, match="too large"):
        read_dfl_metadata(b"\xff\xd8" + bytes(MAX_FILE_BYTES))
    crop, meta = _meta()
    with pytest.raises(DflMetadataError, match="too large for one JPEG segment"):
        write_dfl_jpeg(crop, {**meta, "blob": os.urandom(70_000)})


# ------------------------------------------------------------------------------------------------
# crafted pickles


class _Reduce:
    """Pickles as ``fn(*args)``: the shape of every pickle code-execution exploit."""

    def __init__(self, fn, *args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _evil(fn, *args) -> bytes:
    """A DFL file whose metadata looks normal but unpickles ``fn(*args)`` on the way."""
    _, meta = _meta()
    return _with_app15(pickle.dumps({**meta, "source_filename": _Reduce(fn, *args)}, protocol=3))


@pytest.mark.parametrize("make,forbidden", [
    (lambda marker: (os.system, f"touch {marker}"), "system"),
    (lambda marker: (eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
    (lambda marker: (subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
], ids=["os.system", "builtins.eval", "subprocess.Popen"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, make, forbidden):
    marker = tmp_path / "pwned"
    fn, arg = make(marker)
    data = _evil(fn, arg)
    with pytest.raises(DflMetadataError, match=f"forbidden global .*{forbidden}"):
        read_dfl_metadata(data)
    (tmp_path / "aligned").mkdir()
    (tmp_path / "aligned" / "evil.jpg").write_bytes(data)
    (uri, face, err), = iter_aligned(str(tmp_path / "aligned"))
    assert face is None and "forbidden global" in err
    assert not marker.exists()
    # The payload is live: plain pickle would have run it.
    proc = pickle.loads(data[6:6 + int.from_bytes(data[4:6], "big") - 2])["source_filename"]
    if isinstance(proc, subprocess.Popen):
        proc.wait()
    assert marker.exists()


def test_hand_written_global_is_named(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # protocol 0, no os.system object involved
    with pytest.raises(DflMetadataError, match=r"forbidden global os\.system"):
        read_dfl_metadata(_with_app15(payload))
    assert not marker.exists()


def test_numpy_functions_beyond_array_rebuilding_are_refused(tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(DflMetadataError, match=r"forbidden global numpy\.load"):
        read_dfl_metadata(_evil(np.load, str(npy)))
    with pytest.raises(DflMetadataError, match=r"forbidden global numpy\.lib"):
        read_dfl_metadata(_with_app15(b"cnumpy.lib.format\nread_array\n(tR."))


def test_object_dtypes_are_refused():
    _, meta = _meta()
    for value in (np.array([1, "a", None], dtype=object),
                  np.zeros(2, dtype=[("a", "O")]),
                  _Reduce(_NP_SCALAR, np.dtype("O"), {"x": 1})):
        with pytest.raises(DflMetadataError, match="forbidden numpy dtype"):
            read_dfl_metadata(_with_app15(pickle.dumps({**meta, "landmarks": value}, protocol=3)))


def test_dtype_turned_into_object_by_its_pickled_state_is_refused():
    # A pickled dtype is built from 'f4' and then given a state; a crafted state adds an object field.
    state = (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0x3F)
    sneaky = _Reduce(np.dtype, "f4", False, True, state=state)
    value = _Reduce(_NP_SCALAR, sneaky, b"\0" * 8)
    with pytest.raises(DflMetadataError, match="forbidden numpy dtype"):
        read_dfl_metadata(_with_app15(pickle.dumps({"landmarks": value}, protocol=3)))
    assert np.dtype("f4").fields is None  # numpy's own float32 was never touched


def test_shared_reference_bomb_and_garbage_are_bounded():
    node: list = []
    for _ in range(25):  # 2**25 leaves if walked naively, a few hundred bytes pickled
        node = [node, node]
    with pytest.raises(DflMetadataError, match="too many values"):
        read_dfl_metadata(_with_app15(pickle.dumps({"landmarks": node}, protocol=3)))
    with pytest.raises(DflMetadataError, match="malformed DFL metadata pickle"):
        read_dfl_metadata(_with_app15(b"\x80\x03}q\x00(X\x01"))
    with pytest.raises(DflMetadataError, match="not a dict"):
        read_dfl_metadata(_with_app15(pickle.dumps([1, 2])))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_import_dfl_writes_a_faceset_training_accepts(tmp_path):
    import pickle

    from dflray.cli import main
    from dflray.extract.dfl_import import run_import_dfl
    from dflray.faceset import read_errors, read_faces, read_videos
    from dflray.train.data import inspect_faceset

    aligned = tmp_path / "aligned"
    aligned.mkdir()
    crop, meta = _meta()
    for i in range(5):
        (aligned / f"{i:05d}_0.jpg").write_bytes(write_dfl_jpeg(crop, {**meta, "source_filename": f"{i:05d}.png"}))
    unlabelled = {k: v for k, v in meta.items() if k not in ("seg_ie_polys", "xseg_mask")}
    (aligned / "00005_0.jpg").write_bytes(write_dfl_jpeg(crop, unlabelled))
    marker = tmp_path / "pwned"
    (aligned / "00006_0.jpg").write_bytes(_with_app15(pickle.dumps({"landmarks": _Evil(marker)}), crop))
    out = tmp_path / "faceset"
    summary = run_import_dfl(str(aligned), str(out))
    assert not marker.exists()  # the crafted file ran nothing
    assert summary.faces == 6 and summary.errors == 1 and summary.with_xseg_labels == 5
    faces = read_faces(str(out))
    assert faces.num_rows == 6 and set(faces.column("face_type").to_pylist()) == {"whole_face"}
    labels = faces.column("xseg_label").to_pylist()
    assert sum(x is not None for x in labels) == 5
    label = cv2.imdecode(np.frombuffer(labels[0], np.uint8), cv2.IMREAD_GRAYSCALE)
    assert label.shape == (SIZE, SIZE) and set(np.unique(label)) <= {0, 255}
    errors = read_errors(str(out)).to_pylist()
    assert len(errors) == 1 and errors[0]["uri"].endswith("00006_0.jpg") and "forbidden" in errors[0]["message"]
    assert read_videos(str(out)).column("status").to_pylist() == ["ok"]
    info = inspect_faceset(str(out), "src")  # training accepts it as a faceset
    assert info.faces == 6 and info.face_type == "whole_face" and info.size == SIZE
    # a rerun does nothing, and the CLI says so
    assert run_import_dfl(str(aligned), str(out)).skipped
    assert main(["import-dfl", str(aligned), "--out", str(out)]) == 0
    assert read_faces(str(out)).num_rows == 6
    # a folder without JPEGs is a clear error
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .jpg files"):
        run_import_dfl(str(tmp_path / "empty"), str(tmp_path / "fs2"))

"""One video through the merge without Ray: settings draws, identity choice, tracks, the frame loop and
the transcoder (timestamps, audio, provenance tags, exact masks)."""

from __future__ import annotations

import av
import numpy as np
import pytest
import skimage.data

from dflray.config import ConfigError, MergeConfig, MergeSettings, Vary, load_config
from dflray.io.video import SourceFrame, Transcoder, decode_range, read_masks
from dflray.merge.pipeline import output_name
from dflray.merge.temporal import jitter
from dflray.merge.video import (
    InlinePredict,
    MethodPredict,
    draw_settings,
    link_tracks,
    merge_video,
    plan_faces,
    select_faces,
    settings_sha256,
    video_seed,
)
from tests.media import ASTRONAUT_LM, write_av_clip

# ------------------------------------------------------------------------------ settings draws


def test_video_seed_is_stable_and_per_video():
    assert video_seed(3, "a") == video_seed(3, "a")
    assert len({video_seed(3, v) for v in "abcdefgh"}) == 8
    assert video_seed(3, "a") != video_seed(4, "a")
    assert 0 <= video_seed(2**62, "x") < 2**63


def test_draw_settings_reproducible_in_range_and_weighted():
    vary = [Vary("mode", choices=("overlay", "seamless", "hist-match"), weights=(1, 0, 1)),
            Vary("erode", low=-20, high=40), Vary("color_transfer", choices=("rct", "mkl-m"))]
    draws = [draw_settings(MergeSettings(blur=7), vary, video_seed(0, str(i))) for i in range(200)]
    assert draws[5] == draw_settings(MergeSettings(blur=7), vary, video_seed(0, "5"))
    assert {d.mode for d in draws} == {"overlay", "hist-match"}  # weight 0 never drawn
    assert {d.color_transfer for d in draws} == {"rct", "mkl-m"}
    erodes = [d.erode for d in draws]
    assert min(erodes) >= -20 and max(erodes) <= 40 and len(set(erodes)) > 20
    assert all(d.blur == 7 for d in draws)  # fixed settings stay
    assert draw_settings(MergeSettings(), [], 1) == MergeSettings()
    assert settings_sha256(draws[0]) != settings_sha256(draws[0], smooth_window=5)


def test_vary_and_merge_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"vary\[0\].field"):
        load_config(MergeConfig, overrides=["vary=[{field: nope, choices: [1]}]"])
    with pytest.raises(ConfigError, match=r"vary\[0\].erode"):
        load_config(MergeConfig, overrides=["vary=[{field: erode, low: 0, high: 999}]"])
    with pytest.raises(ConfigError, match="vary"):
        load_config(MergeConfig, overrides=["vary=[{field: blur, low: 0, high: 9}, {field: blur, low: 1, high: 2}]"])
    with pytest.raises(ConfigError, match="smooth_window"):
        load_config(MergeConfig, overrides=["smooth_window=4"])
    with pytest.raises(ConfigError, match="identity.reference"):
        load_config(MergeConfig, overrides=["identity.swap=reference"])


# ------------------------------------------------------------------------------ identity


def _people(rng, frames=40):
    """Person A in every frame, person B in every other frame, C once: descriptors near three centres."""
    centres = rng.normal(0, 1, (3, 128))
    centres *= 0.6 / np.linalg.norm(centres, axis=1, keepdims=True)  # ~0.85 apart, like different people
    idx, who = [], []
    for f in range(frames):
        for p, present in enumerate((True, f % 2 == 0, f == 7)):
            if present:
                idx.append(f)
                who.append(p)
    who = np.array(who)
    emb = centres[who] + rng.normal(0, 0.02, (len(who), 128))
    return np.array(idx), who, emb, centres


def test_dominant_identity_is_the_most_frequent_one_once_per_frame():
    idx, who, emb, _ = _people(np.random.default_rng(0))
    sel = select_faces(idx, emb, "dominant")
    assert set(who[sel]) == {0} and sel.sum() == 40
    assert np.unique(idx[sel]).size == sel.sum()  # at most one face per frame


def test_reference_identity_and_all():
    idx, who, emb, centres = _people(np.random.default_rng(1))
    sel = select_faces(idx, emb, "reference", reference=centres[1] + 0.01)
    assert set(who[sel]) == {1} and sel.sum() == 20
    assert select_faces(idx, emb, "all").all()


def test_missing_embeddings():
    single = np.arange(10)
    assert select_faces(single, None, "dominant").all()  # one face per frame: nothing to choose
    with pytest.raises(ValueError, match="landmarks.embedding=true"):
        select_faces(np.array([0, 0, 1]), None, "dominant")
    idx, who, emb, _ = _people(np.random.default_rng(2))
    emb[::5] = np.nan  # faces without a descriptor are never chosen by identity
    sel = select_faces(idx, emb, "dominant")
    assert not sel[::5].any() and set(who[sel]) == {0}


# ------------------------------------------------------------------------------ tracks


def test_two_faces_side_by_side_become_two_tracks_across_a_gap():
    lm = ASTRONAUT_LM - ASTRONAUT_LM.mean(0)
    idx, lms = [], []
    for f in [0, 1, 2, 4, 5]:  # frame 3 missing
        for x0 in (100, 400):
            idx.append(f)
            lms.append(lm + [x0 + 2 * f, 200])
    ids = link_tracks(np.array(idx), np.array(lms), max_gap=1)
    assert len(set(ids)) == 2 and len(set(ids[0::2])) == 1 and len(set(ids[1::2])) == 1
    assert len(set(link_tracks(np.array(idx), np.array(lms), max_gap=0))) == 4  # no linking over the gap


def test_plan_fills_gaps_and_smoothing_removes_jitter():
    rng = np.random.default_rng(0)
    t = np.arange(60)
    truth = ASTRONAUT_LM[None] + np.stack([2.0 * t, 20 * np.sin(t / 15)], -1)[:, None, :]
    noisy = truth + rng.normal(0, 1.5, (60, 1, 2)) + rng.normal(0, 0.5, truth.shape)
    keep = t % 3 == 0  # extracted with every_n=3
    plan = plan_faces(t[keep], noisy[keep], np.ones(keep.sum(), bool), fill_gaps=2)
    assert sorted(plan) == list(range(0, 58))  # every frame between the first and last face
    mid = plan[10][0].landmarks
    np.testing.assert_allclose(mid, noisy[9] + (noisy[12] - noisy[9]) / 3, atol=1e-9)

    raw = plan_faces(t, noisy, np.ones(60, bool))
    smooth = plan_faces(t, noisy, np.ones(60, bool), smooth_window=9)
    track = lambda p: np.stack([p[f][0].landmarks for f in range(60)])  # noqa: E731
    before, after = jitter(track(raw)), jitter(track(smooth))
    assert after < 0.35 * before, (before, after)
    assert np.abs(track(smooth) - truth).mean() < np.abs(noisy - truth).mean()
    power = np.array([raw[f][0].motion[0] for f in range(1, 59)])
    assert np.all(power > 0)  # the face moves: motion blur has something to work with


def test_output_names_stay_inside_the_output_folder():
    for uri in ["../../x.mp4", "s3://b/../../etc/passwd", "/a/..", "a/.hidden.mp4", "c:\\x\\y.mp4", "中文 名.mp4"]:
        name = output_name(uri, "0123456789abcdef")
        assert "/" not in name and "\\" not in name and not name.startswith(".") and name.endswith("_01234567")


# ------------------------------------------------------------------------------ transcode and merge


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 lossless frames: the astronaut (frames 0-3 and 8-11, moving) and a blank wall (4-7); audio."""
    img = np.ascontiguousarray(skimage.data.astronaut()[:320, :320])
    frames = []
    for i in range(12):
        if 4 <= i < 8:
            frames.append(np.full_like(img, 90))
        else:
            frames.append(np.ascontiguousarray(np.roll(img, i, axis=1)))
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return write_av_clip(path, frames, fps=25, codec="libx264rgb", pix_fmt="rgb24", crf=0), frames


def _streams(path):
    with av.open(path) as c:
        v = c.streams.video[0]
        pts, tb = [f.pts for f in c.decode(v)], float(v.time_base)
    with av.open(path) as c:
        audio = [p.pts for p in c.demux(c.streams.audio[0]) if p.dts is not None] if c.streams.audio else []
        return pts, tb, audio, dict(c.metadata)


def test_transcoder_keeps_timestamps_audio_and_tags(clip, tmp_path):
    path, frames = clip
    out, mask = str(tmp_path / "o.mp4"), str(tmp_path / "m.mp4")
    rng = np.random.default_rng(0)
    written = {}
    with Transcoder(path, out, mask_path=mask, lossless=True, metadata={"dflray_synthetic": "1", "comment": "x"}) as t:
        assert t.has_audio and t.fps == 25
        for f in t.frames():
            m = rng.integers(0, 256, f.rgb.shape[:2], dtype=np.uint8)
            written[f.index] = m
            t.write(f, f.rgb, m)
    in_pts, in_tb, in_audio, _ = _streams(path)
    out_pts, out_tb, out_audio, meta = _streams(out)
    assert [p * out_tb for p in out_pts] == pytest.approx([p * in_tb for p in in_pts])
    assert out_audio == in_audio and len(in_audio) > 5  # every audio packet, same timestamps
    assert meta["dflray_synthetic"] == "1" and meta["comment"] == "x"
    got = dict(decode_range(out))
    assert all(np.array_equal(got[i], frames[i]) for i in range(12))  # lossless RGB
    masks = dict(read_masks(mask))
    assert sorted(masks) == list(range(12)) and all(np.array_equal(masks[i], written[i]) for i in range(12))


def _inverting_model(crops):
    n, r = crops.shape[:2]
    return 1.0 - crops, np.ones((n, r, r), np.float32), np.ones((n, r, r), np.float32)


def test_merge_video_changes_faces_only_inside_the_mask(clip, tmp_path):
    path, frames = clip
    face_frames = [i for i in range(12) if not 4 <= i < 8]
    idx = np.array(face_frames)
    lms = np.stack([ASTRONAUT_LM + [i, 0] for i in face_frames])
    plan = plan_faces(idx, lms, np.ones(len(idx), bool))
    settings = MergeSettings(mask_mode="full", color_transfer="none", erode=10, blur=10)
    out, mask = str(tmp_path / "o.mp4"), str(tmp_path / "m.mp4")
    with Transcoder(path, out, mask_path=mask, lossless=True) as t:
        rows = merge_video(t, plan, InlinePredict(_inverting_model, batch_size=3), settings, face_type="whole_face",
                           resolution=64, seed=1, batch_frames=5, faces_per_frame=dict.fromkeys(face_frames, 1))
    assert [r["frame_index"] for r in rows] == list(range(12))
    got, masks = dict(decode_range(out)), dict(read_masks(mask))
    for i in range(12):
        if i in face_frames:
            m = masks[i] > 0
            assert rows[i]["faces_swapped"] == 1 and 0.05 < rows[i]["mask_area"] < 0.6
            assert m.mean() == pytest.approx(rows[i]["mask_area"])
            assert np.array_equal(got[i][~m], frames[i][~m])  # outside the mask: untouched
            assert np.abs(got[i][m].astype(int) - frames[i][m]).mean() > 40  # inside: the swap
            x1, y1, x2, y2 = rows[i]["bbox"]
            assert x1 < ASTRONAUT_LM[:, 0].min() + i and x2 > ASTRONAUT_LM[:, 0].max() + i
        else:
            assert rows[i]["faces_swapped"] == 0 and rows[i]["bbox"] is None and not masks[i].any()
            assert np.array_equal(got[i], frames[i])  # no face: pixel-identical


def test_a_training_free_method_gets_each_crops_landmarks_and_swaps_only_inside_its_mask(clip, tmp_path):
    """A method (MethodPredict) runs where a model would, with the landmarks of each crop in crop pixels."""
    from dflray.face.align import get_transform_mat, transform_points
    from dflray.methods import build_method

    path, frames = clip
    face_frames = [i for i in range(12) if not 4 <= i < 8]
    idx = np.array(face_frames)
    plan = plan_faces(idx, np.stack([ASTRONAUT_LM + [i, 0] for i in face_frames]), np.ones(len(idx), bool))
    sbi = build_method("sbi", resolution=64, face_type="whole_face", seed=5)
    seen = []

    def method(crops, landmarks):
        seen.extend(landmarks)
        return sbi(crops, landmarks)

    settings = MergeSettings(mask_mode="learned-prd", color_transfer="none")
    out, mask = str(tmp_path / "o.mp4"), str(tmp_path / "m.mp4")
    with Transcoder(path, out, mask_path=mask, lossless=True) as t:
        rows = merge_video(t, plan, MethodPredict(method, batch_size=3), settings, face_type="whole_face",
                           resolution=64, seed=1, batch_frames=5)
    assert len(seen) == len(face_frames) and all(lm.shape == (68, 2) and lm.dtype == np.float32 for lm in seen)
    for i, lm in zip(face_frames, seen):  # the merge smooths landmarks over time: within a pixel of the raw ones
        want = transform_points(ASTRONAUT_LM + [i, 0], get_transform_mat(ASTRONAUT_LM + [i, 0], 64, "whole_face"))
        assert np.abs(lm - want).max() < 1.0
    got, masks = dict(decode_range(out)), dict(read_masks(mask))
    for i in face_frames:
        m = masks[i] > 0
        assert rows[i]["faces_swapped"] == 1 and 0.02 < rows[i]["mask_area"] < 0.5
        assert np.array_equal(got[i][~m], frames[i][~m]) and not np.array_equal(got[i][m], frames[i][m])


def test_merge_video_streams_in_order_with_the_model_one_batch_behind(clip, tmp_path):
    """Batches go to the model before earlier ones are pasted, and every frame is written once, in order."""
    path, _ = clip
    log = []

    class Recording(InlinePredict):
        def submit(self, crops):
            log.append(("submit", len(crops)))
            return super().submit(crops)

        def result(self, handle):
            log.append(("result", len(handle[0])))
            return handle

    idx = np.arange(12)
    plan = plan_faces(idx, np.stack([ASTRONAUT_LM] * 12), np.ones(12, bool))
    with Transcoder(path, str(tmp_path / "o.mp4")) as t:
        rows = merge_video(t, plan, Recording(_inverting_model, batch_size=4), MergeSettings(), face_type="full",
                           resolution=32, seed=0, batch_frames=4)
    assert [r["frame_index"] for r in rows] == list(range(12))
    assert log[:3] == [("submit", 4), ("submit", 4), ("result", 4)]
    assert sum(n for k, n in log if k == "submit") == 12


def test_source_frame_is_plain_data():
    f = SourceFrame(3, 300, 0.12, np.zeros((2, 2, 3), np.uint8))
    assert (f.index, f.pts, f.time) == (3, 300, 0.12)


def test_reference_image_identity_from_real_photos():
    """dlib descriptors of reference photos: the same person is under the threshold, another is not."""
    from dflray.merge.pipeline import reference_embedding
    from tests.media import shared_media

    a1, a2, b = (reference_embedding(shared_media(n)) for n in ("obama_1.jpg", "obama_2.jpg", "biden.jpg"))
    assert np.linalg.norm(a1 - a2) < 0.6 < np.linalg.norm(a1 - b)
    frame_idx = np.array([0, 0, 1, 1])
    sel = select_faces(frame_idx, np.stack([a2, b, b, a2]), "reference", reference=a1)
    assert sel.tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="not a readable image"):
        reference_embedding(__file__)


def test_merge_video_xseg_modes_run_the_segmenter_on_each_batch(clip, tmp_path):
    """XSeg-dst with a segmenter that calls everything face writes what mask_mode=full writes; one that
    calls nothing face writes the input frames; without a segmenter the mode is refused."""
    from tests.unit.merge.test_merge_blend import constant_xseg

    path, frames = clip
    idx = np.arange(12)
    plan = plan_faces(idx, np.stack([ASTRONAUT_LM] * 12), np.ones(12, bool))

    def run(name, settings, xseg):
        out = str(tmp_path / f"{name}.mp4")
        with Transcoder(path, out, lossless=True) as t:
            merge_video(t, plan, InlinePredict(_inverting_model, batch_size=4), settings, face_type="whole_face",
                        resolution=64, seed=3, batch_frames=5, xseg=xseg)
        return dict(decode_range(out))

    base = dict(color_transfer="none", blur=10)
    full = run("full", MergeSettings(mask_mode="full", **base), None)
    ones = run("ones", MergeSettings(mask_mode="XSeg-prd*XSeg-dst", **base), constant_xseg(30.0, "head", 32))
    none = run("none", MergeSettings(mask_mode="XSeg-dst", **base), constant_xseg(-30.0))
    for i in range(12):
        assert np.array_equal(none[i], frames[i])
        assert np.abs(full[i].astype(int) - frames[i]).mean() > 3
    # An all-face segmenter at another face type ("head", wider than the model's crop) covers the crop
    # (within one 8-bit step: its mask is warped through the frame in float).
    assert all(np.abs(ones[i].astype(int) - full[i]).max() <= 1 for i in range(12))
    with pytest.raises(ValueError, match="XSeg"):
        run("missing", MergeSettings(mask_mode="XSeg-dst"), None)


def test_xseg_mask_modes_need_an_xseg_model_in_the_config():
    for override in (["settings.mask_mode=XSeg-dst"],
                     ["vary=[{field: mask_mode, choices: [dst, learned-prd*learned-dst*XSeg-prd*XSeg-dst]}]"]):
        with pytest.raises(ConfigError, match="^xseg:"):
            load_config(MergeConfig, overrides=override)
        cfg = load_config(MergeConfig, overrides=[*override, "xseg=models/xseg"])
        assert cfg.uses_xseg and cfg.xseg == "models/xseg"
    assert not load_config(MergeConfig, overrides=["xseg=models/xseg"]).uses_xseg

"""The perturbation stage: every DeeperForensics-1.0 distortion at every level, measured on real pixels;
the FaceForensics++ compression levels measured in the container; draws of mixes; the video pass."""

from __future__ import annotations

import itertools
from pathlib import Path
from statistics import NormalDist

import av
import cv2
import numpy as np
import pytest

from dflray.config import PERTURB_KINDS, PerturbConfig
from dflray.dataset.perturb import (
    CRF,
    FRAME_ORDER,
    LEVELS,
    Distortion,
    apply_frame,
    distortion_values,
    draw_distortions,
    encoded_crf,
    final_crf,
    frame_rng,
    parse_spec,
    perturb_video,
    spec_string,
)
from dflray.io.video import decode_range
from dflray.sample import animate, load_portrait
from tests.media import write_av_clip, write_video

LEVEL_NUMBERS = (1, 2, 3, 4, 5)
FRAME_KINDS = tuple(k for k in PERTURB_KINDS if k != "compression")


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """A natural 256×256 RGB image (the astronaut)."""
    return cv2.resize(load_portrait("astronaut"), (256, 256), interpolation=cv2.INTER_AREA)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _laplacian_var(rgb: np.ndarray) -> float:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


# ------------------------------------------------------------------------------ levels and specs


def test_levels_are_deeperforensics_parameters():
    assert tuple(LEVELS) == PERTURB_KINDS
    assert LEVELS == {
        "saturation": (0.4, 0.3, 0.2, 0.1, 0.0),
        "contrast": (0.85, 0.725, 0.6, 0.475, 0.35),
        "block": (16, 32, 48, 64, 80),
        "noise": (0.001, 0.002, 0.005, 0.01, 0.05),
        "blur": (7, 9, 13, 17, 21),
        "resolution": (2, 3, 4, 5, 6),
        "compression": (30, 32, 35, 38, 40),
    }
    assert CRF == {"c0": 0, "c23": 23, "c40": 40}
    assert sorted(FRAME_ORDER) == sorted(FRAME_KINDS)


@pytest.mark.parametrize("kind,level", list(itertools.product(PERTURB_KINDS, LEVEL_NUMBERS)))
def test_distortion_value_string_and_round_trip(kind, level):
    d = Distortion(kind, level)
    assert d.value == LEVELS[kind][level - 1]
    assert str(d) == f"{kind}:{level}"
    assert parse_spec(str(d)) == (d,)
    assert spec_string([d]) == str(d)
    assert distortion_values([d]) == {kind: d.value}


def test_spec_strings_are_canonical():
    dists = parse_spec(" blur:3 + saturation:1+compression:5")
    assert [d.kind for d in dists] == ["saturation", "blur", "compression"]
    assert spec_string(dists) == "saturation:1+blur:3+compression:5"
    assert spec_string(reversed(dists)) == spec_string(dists)
    assert parse_spec("none") == parse_spec("") == () and spec_string(()) == "none"
    assert distortion_values(dists) == {"saturation": 0.4, "blur": 13, "compression": 40}


@pytest.mark.parametrize("make,match", [
    (lambda: Distortion("sharpen", 1), "kind 'sharpen' is unknown"),
    (lambda: Distortion("blur", 0), "level of blur must be an integer in 1..5"),
    (lambda: Distortion("blur", 6), "level of blur"),
    (lambda: Distortion("blur", 2.0), "level of blur"),
    (lambda: parse_spec("blur3"), "not 'kind:level'"),
    (lambda: parse_spec("blur:1+noise:2+blur:2"), "lists blur twice"),
    (lambda: parse_spec("blur:9"), "level of blur"),
    (lambda: final_crf((), "c10"), "compression must be one of c0, c23, c40"),
])
def test_bad_specs_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ------------------------------------------------------------------------------ frame-wise kinds


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """Cr and Cb about neutral (OpenCV's BT.601 YCrCb), float."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(np.float64) - 128


@pytest.mark.parametrize("level", LEVEL_NUMBERS)
def test_saturation_scales_chroma_and_keeps_luma(portrait, level):
    p = LEVELS["saturation"][level - 1]
    out = apply_frame(portrait, [Distortion("saturation", level)], _rng())
    c_in, c_out = _chroma(portrait), _chroma(out)
    slope = (c_in * c_out).sum() / (c_in ** 2).sum()  # least-squares chroma scale
    assert slope == pytest.approx(p, abs=0.01)
    assert np.abs(c_out).mean() == pytest.approx(p * np.abs(c_in).mean(), abs=0.4)
    y_in = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY).astype(float)
    y_out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(float)
    assert np.abs(y_out - y_in).mean() < 0.6 and abs((y_out - y_in).mean()) < 0.2
    if p == 0.0:  # greyscale: the three channels are the same
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    else:
        assert np.abs(c_out).mean() > 1


@pytest.mark.parametrize("level", LEVEL_NUMBERS)
def test_contrast_scales_every_value(portrait, level):
    p = LEVELS["contrast"][level - 1]
    out = apply_frame(portrait, [Distortion("contrast", level)], _rng())
    x, y = portrait.astype(np.float64), out.astype(np.float64)
    assert (x * y).sum() / (x ** 2).sum() == pytest.approx(p, abs=0.002)
    assert y.mean() / x.mean() == pytest.approx(p, abs=0.003)
    assert y.std() / x.std() == pytest.approx(p, abs=0.003)
    assert np.abs(y - p * x).max() <= 0.5 + 1e-6  # rounded, not truncated


def _non_grey_frame(h: int, w: int) -> np.ndarray:
    """Random colours that never equal the block grey in all channels."""
    return np.random.default_rng(1).integers(0, 120, (h, w, 3), dtype=np.uint8)


def _block_cover(changed: np.ndarray, size: int = 8) -> np.ndarray:
    """Pixels covered by a size×size window lying entirely in ``changed``."""
    h, w = changed.shape
    s = np.pad(changed.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    full = (s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]) == size * size
    cover = np.zeros_like(changed)
    for dy in range(size):
        for dx in range(size):
            cover[dy:dy + full.shape[0], dx:dx + full.shape[1]] |= full
    return cover


@pytest.mark.parametrize("level", LEVEL_NUMBERS)
def test_block_pastes_grey_8px_blocks_counted_per_256px(level):
    img = _non_grey_frame(512, 640)  # shorter side 512: 2 × the level's count
    n = 2 * LEVELS["block"][level - 1]
    out = apply_frame(img, [Distortion("block", level)], _rng(level))
    changed = np.any(out != img, axis=2)
    assert np.all(out[changed] == 128)  # flat grey
    assert np.array_equal(_block_cover(changed), changed)  # a union of whole 8×8 blocks
    assert 0.9 * n * 64 <= changed.sum() <= n * 64  # n blocks, few overlapping


def test_block_count_grows_with_level_and_with_frame_size():
    img = _non_grey_frame(256, 300)
    areas = [np.all(apply_frame(img, [Distortion("block", lv)], _rng(lv)) == 128, axis=2).sum() for lv in LEVEL_NUMBERS]
    assert all(a < b for a, b in zip(areas, areas[1:]))
    # DF-1.0 scales the count by the shorter side in whole multiples of 256 px; under 256 there are none.
    small = _non_grey_frame(255, 800)
    assert np.array_equal(apply_frame(small, [Distortion("block", 5)], _rng()), small)
    big = _non_grey_frame(768, 800)
    area = np.all(apply_frame(big, [Distortion("block", 1)], _rng()) == 128, axis=2).sum()
    assert 0.9 * 3 * 16 * 64 <= area <= 3 * 16 * 64


def test_block_positions_are_drawn_from_the_rng():
    img = _non_grey_frame(256, 256)
    d = [Distortion("block", 3)]
    a, b, c = (apply_frame(img, d, _rng(s)) for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# BT.601: RGB from full-range Y, Cb, Cr (chroma about 0) — written out here, independently of the module.
_YCC2RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])
_STUDIO = np.array([219 / 255, 224 / 255, 224 / 255])  # studio-swing span of Y, Cb, Cr


def _studio_ycc(diff_rgb: np.ndarray) -> np.ndarray:
    """RGB differences (pixel units) → normalised studio-swing YCbCr differences."""
    return (diff_rgb / 255.0) @ np.linalg.inv(_YCC2RGB).T * _STUDIO


@pytest.mark.parametrize("level", LEVEL_NUMBERS)
def test_noise_variance_is_the_parameter_in_studio_ycbcr(level):
    """A robust per-channel estimate, mapped back to the YCbCr variance it implies. The share of
    |difference| <= k (k near the median, where neither the clipping at 0/255 of level 5 nor the
    rounding to integers bias it) gives each RGB channel's Gaussian standard deviation."""
    p = LEVELS["noise"][level - 1]
    grey = np.full((256, 256, 3), 128, np.uint8)
    out = apply_frame(grey, [Distortion("noise", level)], _rng(level))
    d = out.reshape(-1, 3).astype(np.float64) - 128
    k = np.median(np.abs(d), axis=0)
    share = (np.abs(d) <= k).mean(axis=0)  # = P(|x| < k + 0.5) for x ~ N(0, std²) before rounding
    std_rgb = (k + 0.5) / np.array([NormalDist().inv_cdf((1 + q) / 2) for q in share]) / 255.0
    gain = ((_YCC2RGB / _STUDIO) ** 2).sum(axis=1)  # RGB variance per unit of YCbCr variance
    assert std_rgb ** 2 / gain == pytest.approx([p] * 3, rel=0.05)
    assert abs(np.median(d)) <= 1  # zero mean


@pytest.mark.parametrize("level", (1, 2, 3))
def test_noise_is_white_and_independent_in_y_cb_cr(level):
    """At levels without clipping the plain variance applies: equal in Y, Cb and Cr and uncorrelated
    (noise added in RGB would be neither)."""
    p = LEVELS["noise"][level - 1]
    grey = np.full((256, 256, 3), 128, np.uint8)
    out = apply_frame(grey, [Distortion("noise", level)], _rng(10 + level))
    ycc = _studio_ycc(out.reshape(-1, 3).astype(np.float64) - 128)
    assert ycc.var(axis=0) == pytest.approx([p] * 3, rel=0.04)
    corr = np.corrcoef(ycc.T)
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.03
    img = out.reshape(256, 256, 3).astype(np.float64)[..., 0] - 128
    assert abs(np.corrcoef(img[:, 1:].ravel(), img[:, :-1].ravel())[0, 1]) < 0.03  # white: no spatial correlation


@pytest.mark.parametrize("level", LEVEL_NUMBERS)
def test_blur_is_opencv_gaussian_with_kernel_and_sigma(portrait, level):
    k = LEVELS["blur"][level - 1]
    out = apply_frame(portrait, [Distortion("blur", level)], _rng())
    assert np.array_equal(out, cv2.GaussianBlur(portrait, (k, k), k / 6))


def test_blur_removes_more_detail_at_each_level(portrait):
    lap = [_laplacian_var(portrait)] + [_laplacian_var(apply_frame(portrait, [Distortion("blur", lv)], _rng()))
                                        for lv in LEVEL_NUMBERS]
    assert all(a > b for a, b in zip(lap, lap[1:]))


@pytest.mark.parametrize("level", LEVEL_NUMBERS)
def test_resolution_is_a_down_and_up_scaled_copy(portrait, level):
    f = LEVELS["resolution"][level - 1]
    img = np.ascontiguousarray(portrait[:190, :250])  # sizes that the factors do not divide
    out = apply_frame(img, [Distortion("resolution", level)], _rng())
    small = cv2.resize(img, (250 // f, 190 // f), interpolation=cv2.INTER_LINEAR)
    assert out.shape == img.shape
    assert np.array_equal(out, cv2.resize(small, (250, 190), interpolation=cv2.INTER_LINEAR))


def test_resolution_removes_more_detail_at_each_factor(portrait):
    lap = [_laplacian_var(portrait)] + [_laplacian_var(apply_frame(portrait, [Distortion("resolution", lv)], _rng()))
                                        for lv in LEVEL_NUMBERS]
    assert all(a > b for a, b in zip(lap, lap[1:]))


def test_apply_frame_applies_a_mix_in_the_fixed_order_and_leaves_its_input(portrait):
    img = cv2.resize(portrait, (512, 512))
    before = img.copy()
    mix = parse_spec("block:2+blur:1+noise:1+saturation:3")
    got = apply_frame(img, list(reversed(mix)), _rng(4))
    assert np.array_equal(img, before)
    r = _rng(4)
    step = img
    for kind in FRAME_ORDER:  # one at a time, the random ones drawing from the same generator in turn
        step = apply_frame(step, [d for d in mix if d.kind == kind], r)
    assert np.array_equal(got, step)
    assert np.all(got == 128, axis=2).sum() >= 0.9 * 2 * 32 * 64  # blocks come last: still flat grey
    assert got.shape == img.shape and got.dtype == np.uint8


def test_apply_frame_leaves_compression_to_the_encode_and_checks_its_input(portrait):
    out = apply_frame(portrait, "compression:5", _rng())
    assert np.array_equal(out, portrait) and out is not portrait
    assert np.array_equal(apply_frame(portrait, (), _rng()), portrait)
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        apply_frame(portrait.astype(np.float32), (), _rng())
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        apply_frame(portrait[..., 0], (), _rng())


# ------------------------------------------------------------------------------ draws


def test_draw_distortions_is_reproducible_per_seed():
    cfg = PerturbConfig(fraction=0.8, mix_fraction=0.5)
    assert [draw_distortions(cfg, s) for s in range(50)] == [draw_distortions(cfg, s) for s in range(50)]
    assert len({spec_string(draw_distortions(cfg, s)) for s in range(50)}) > 20
    assert draw_distortions(cfg, 2**62 + 3) == draw_distortions(cfg, 2**62 + 3)
    with pytest.raises(ValueError, match="seed"):
        draw_distortions(cfg, -1)


def test_draw_distortions_respects_fraction_mix_bounds_kinds_and_levels():
    cfg = PerturbConfig(fraction=0.5, mix_fraction=0.3, mix_min=2, mix_max=4,
                        kinds=("saturation", "block", "noise", "blur", "compression"), levels=(2, 4, 5))
    draws = [draw_distortions(cfg, s) for s in range(2000)]
    distorted = [d for d in draws if d]
    assert len(distorted) / len(draws) == pytest.approx(0.5, abs=0.045)
    mixes = [d for d in distorted if len(d) > 1]
    assert len(mixes) / len(distorted) == pytest.approx(0.3, abs=0.06)
    assert {len(d) for d in mixes} == {2, 3, 4}
    for d in distorted:
        kinds = [x.kind for x in d]
        assert len(set(kinds)) == len(kinds)  # distinct
        assert kinds == sorted(kinds, key=PERTURB_KINDS.index)  # canonical order
        assert set(kinds) <= set(cfg.kinds) and {x.level for x in d} <= set(cfg.levels)
    assert {x.kind for d in distorted for x in d} == set(cfg.kinds)
    assert {x.level for d in distorted for x in d} == set(cfg.levels)


def test_draw_distortions_edges():
    assert all(draw_distortions(PerturbConfig(fraction=0.0), s) == () for s in range(100))
    every_mix = PerturbConfig(fraction=1.0, mix_fraction=1.0, mix_min=3, mix_max=3)
    assert all(len(draw_distortions(every_mix, s)) == 3 for s in range(100))
    two_kinds = PerturbConfig(fraction=1.0, mix_fraction=1.0, mix_min=3, mix_max=4, kinds=("blur", "noise"))
    assert all([x.kind for x in draw_distortions(two_kinds, s)] == ["noise", "blur"] for s in range(50))
    one_kind = PerturbConfig(fraction=1.0, mix_fraction=1.0, kinds=("contrast",), levels=(3,))
    assert draw_distortions(one_kind, 9) == (Distortion("contrast", 3),)
    singles = PerturbConfig(fraction=1.0, mix_fraction=0.0)
    assert all(len(draw_distortions(singles, s)) == 1 for s in range(100))


# ------------------------------------------------------------------------------ encode and video


@pytest.mark.parametrize("compression", list(CRF))
@pytest.mark.parametrize("vc_level", [None, *LEVEL_NUMBERS])
def test_final_crf_is_the_coarser_of_vc_and_level(compression, vc_level):
    dists = () if vc_level is None else (Distortion("compression", vc_level), Distortion("blur", 2))
    expected = CRF[compression] if vc_level is None else max(LEVELS["compression"][vc_level - 1], CRF[compression])
    assert final_crf(dists, compression) == expected


N_FRAMES, SIZE = 10, 256


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """10 lossless 256×256 frames of the moving astronaut, with an AAC track."""
    frames = list(animate(load_portrait("astronaut"), (220.0, 121.0), 90.0, N_FRAMES, size=SIZE))
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return write_av_clip(path, frames, fps=25, codec="libx264rgb", pix_fmt="rgb24", crf=0), frames


def _frames(path: str) -> list[np.ndarray]:
    return [f for _, f in decode_range(path)]


def _timeline(path: str):
    with av.open(path) as c:
        v = c.streams.video[0]
        video = [float(f.pts * v.time_base) for f in c.decode(v)]
    with av.open(path) as c:
        audio = [p.pts for p in c.demux(c.streams.audio[0]) if p.dts is not None] if c.streams.audio else []
        return video, audio, dict(c.metadata)


@pytest.fixture(scope="module")
def vc_outputs(clip, tmp_path_factory):
    """The clip at every video-compression level (c0, so the distortion alone sets the CRF)."""
    path, _ = clip
    out_dir = tmp_path_factory.mktemp("vc")
    outs = {}
    for level in LEVEL_NUMBERS:
        out = str(out_dir / f"vc{level}.mp4")
        info = perturb_video(path, out, [Distortion("compression", level)], "c0", seed=1, preset="veryfast")
        outs[level] = (out, info)
    return outs


@pytest.mark.parametrize("level", LEVEL_NUMBERS)
def test_video_compression_level_is_the_crf_in_the_container(vc_outputs, level):
    out, info = vc_outputs[level]
    crf = LEVELS["compression"][level - 1]
    assert info["crf"] == crf
    assert encoded_crf(out) == float(crf)


def test_video_compression_quality_falls_with_the_level(clip, vc_outputs):
    _, frames = clip
    psnr = [np.mean([_psnr(a, b) for a, b in zip(_frames(vc_outputs[lv][0]), frames)]) for lv in LEVEL_NUMBERS]
    assert all(a > b for a, b in zip(psnr, psnr[1:]))
    assert 25 < psnr[-1] < psnr[0] < 45


@pytest.mark.parametrize("compression", list(CRF))
def test_compression_levels_measured_in_the_container(clip, tmp_path, compression):
    path, frames = clip
    out = str(tmp_path / f"{compression}.mp4")
    info = perturb_video(path, out, (), compression, seed=0, preset="veryfast")
    assert info["crf"] == CRF[compression]
    assert encoded_crf(out) == float(CRF[compression])
    got = _frames(out)
    assert len(got) == N_FRAMES
    if compression == "c0":
        assert all(np.array_equal(a, b) for a, b in zip(got, frames))  # lossless
    else:
        assert 25 < np.mean([_psnr(a, b) for a, b in zip(got, frames)]) < 50


def test_coarser_compression_level_wins_over_the_vc_distortion(clip, tmp_path):
    path, _ = clip
    out = str(tmp_path / "o.mp4")
    assert perturb_video(path, out, "compression:1", "c40", seed=0, preset="ultrafast")["crf"] == 40
    assert encoded_crf(out) == 40.0


def test_c0_frames_are_bit_identical_to_apply_frame(clip, tmp_path):
    path, frames = clip
    dists = parse_spec("saturation:3+block:1+noise:2+resolution:1")
    out = str(tmp_path / "c0.mp4")
    perturb_video(path, out, dists, "c0", seed=3, preset="ultrafast")
    got = _frames(out)
    assert len(got) == N_FRAMES
    for i, (g, src) in enumerate(zip(got, frames)):
        assert np.array_equal(g, apply_frame(src, dists, frame_rng(3, i)))
    assert not np.array_equal(got[0], frames[0])
    # the noise and the block positions differ from frame to frame
    blocks = [np.all(g == 128, axis=2) for g in got[:2]]
    assert not np.array_equal(blocks[0], blocks[1])


def test_perturb_video_keeps_frames_timestamps_audio_and_writes_tags(clip, tmp_path):
    path, _ = clip
    out = str(tmp_path / "o.mp4")
    tags = {"dflray_perturbation": "blur:2+noise:1", "comment": "dflray dataset"}
    info = perturb_video(path, out, "blur:2+noise:1", "c23", seed=7, preset="veryfast", metadata=tags)
    assert info == {"frames": N_FRAMES, "fps": 25.0, "width": SIZE, "height": SIZE, "has_audio": True, "crf": 23}
    in_video, in_audio, _ = _timeline(path)
    out_video, out_audio, meta = _timeline(out)
    assert out_video == pytest.approx(in_video) and len(out_video) == N_FRAMES
    assert out_audio == in_audio and len(in_audio) > 5
    assert all(meta[k] == v for k, v in tags.items())


def test_perturb_video_rerun_is_bit_identical_and_seeded(clip, tmp_path):
    path, _ = clip
    outs = [str(tmp_path / f"{n}.mp4") for n in "abc"]
    for out, seed in zip(outs, (11, 11, 12)):
        perturb_video(path, out, "noise:3+block:2", "c23", seed=seed, preset="ultrafast")
    data = [Path(o).read_bytes() for o in outs]
    assert data[0] == data[1] and data[0] != data[2]


def test_perturb_video_checks_its_options(clip, tmp_path):
    path, _ = clip
    out = str(tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="preset must be one of"):
        perturb_video(path, out, (), "c23", seed=0, preset="fastest")
    with pytest.raises(ValueError, match="compression must be one of"):
        perturb_video(path, out, (), "c50", seed=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        perturb_video(path, out, (), "c23", seed=-2)


def test_encoded_crf_is_none_without_x264_settings(tmp_path):
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(3)]
    path = write_video(tmp_path / "m.mp4", frames, codec="mpeg4")
    assert encoded_crf(path) is None

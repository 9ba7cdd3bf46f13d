"""Detection metrics: AUC (ties, weights), video-level scores, bootstrap intervals, the slice breakdown."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from dflray.quality.detection import VideoResult, auc, bootstrap_auc, breakdown, quality_buckets, video_scores


def test_auc_hand_computed_with_ties():
    # reals 0.1, 0.4, 0.4; fakes 0.4, 0.8. Pairs (fake, real): 0.4 vs 0.1 win, vs 0.4 and 0.4 two ties;
    # 0.8 beats all three: (1 + 0.5 + 0.5 + 3) / 6.
    labels = [0, 0, 0, 1, 1]
    scores = [0.1, 0.4, 0.4, 0.4, 0.8]
    assert auc(labels, scores) == pytest.approx(5 / 6)
    assert auc([0, 1], [0.3, 0.3]) == 0.5
    assert auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0


def test_auc_matches_mann_whitney():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounded: many ties
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert auc(y, s) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()))


def test_auc_weights_are_multiplicities():
    y, s = np.array([0, 0, 1, 1]), np.array([0.2, 0.6, 0.5, 0.9])
    w = np.array([2, 0, 1, 3])
    assert auc(y, s, w) == pytest.approx(auc(np.repeat(y, w), np.repeat(s, w)))


def test_auc_independent_and_separable():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20000)
    assert auc(y, rng.random(20000)) == pytest.approx(0.5, abs=0.02)
    assert auc(y, y + rng.random(20000) * 0.5) == 1.0


def test_auc_one_class_is_nan_and_bad_inputs_fail():
    assert np.isnan(auc([1, 1], [0.1, 0.2]))
    with pytest.raises(ValueError, match="0 \\(REAL\\) or 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="one length"):
        auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        auc([0, 1], [0.1, float("nan")])


def test_video_scores_are_frame_means():
    ids, s = video_scores(["b", "a", "b", "a", "c"], [0.2, 0.5, 0.4, 0.7, 0.1])
    assert ids.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(s, [0.6, 0.3, 0.1])


def _separated(n: int, seed: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n)
    return y, rng.normal(y * shift, 1.0)


def test_bootstrap_contains_estimate_and_narrows_with_n():
    widths = []
    for n in (20, 200, 2000):
        y, s = _separated(n, seed=n)
        a, lo, hi = bootstrap_auc(y, s, n_boot=400, seed=1)
        assert a == pytest.approx(auc(y, s))
        assert lo <= a <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # the true AUC of N(1, 1) against N(0, 1) is Φ(1/√2) ≈ 0.760: a large sample's interval holds it
    _, lo, hi = bootstrap_auc(*_separated(2000, seed=7), n_boot=400)
    assert lo < 0.760 < hi


def test_bootstrap_is_seeded_and_resamples_groups():
    y, s = _separated(30, seed=2)
    assert bootstrap_auc(y, s, seed=5) == bootstrap_auc(y, s, seed=5)
    assert bootstrap_auc(y, s, seed=5) != bootstrap_auc(y, s, seed=6)
    # 10 videos per class of 40 frames each, frames within a video strongly alike: resampling videos sees
    # 20 units, resampling frames 800, so the grouped interval must be the wider one.
    rng = np.random.default_rng(0)
    vid_label = np.repeat([0, 1], 10)
    vid_mean = rng.normal(vid_label * 0.8, 1.0)
    groups = np.repeat(np.arange(20), 40)
    frames = vid_mean[groups] + rng.normal(0, 0.05, len(groups))
    labels = vid_label[groups]
    a, lo, hi = bootstrap_auc(labels, frames, groups, n_boot=400)
    _, flo, fhi = bootstrap_auc(labels, frames, None, n_boot=400)
    assert lo <= a <= hi and flo <= a <= fhi
    assert (hi - lo) > 2 * (fhi - flo)


def test_bootstrap_checks():
    assert all(np.isnan(bootstrap_auc([0, 0], [0.1, 0.2])))
    # one video of a class: resampling shows no spread, so the interval says nothing is known
    assert bootstrap_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], groups=["r", "r", "f1", "f2"]) == (1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="both REAL and FAKE"):
        bootstrap_auc([0, 1], [0.1, 0.2], groups=["v", "v"])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_auc([0, 1], [0.1, 0.2], n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_auc([0, 1], [0.1, 0.2], confidence=1.0)


def test_quality_buckets_terciles_keep_ties_together():
    assert quality_buckets([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == ["low", "low", "mid", "mid", "high", "high"]
    assert quality_buckets([1.0, 1.0, 1.0]) == ["mid"] * 3
    assert quality_buckets([None, float("nan"), 0.5]) == ["unmeasured", "unmeasured", "mid"]
    b = quality_buckets([0.2, 0.9, 0.2, 0.5, 0.2])
    assert len({b[0], b[2], b[4]}) == 1


def _videos(seed: int = 0) -> list[VideoResult]:
    """6 reals and 12 fakes over two methods, two compression levels and a few distortions; fakes score
    higher the better their swap (the detector sees the poor swaps as real)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(6):
        comp = ("c23", "c40")[i % 2]
        out.append(VideoResult(f"r{i}", 0, rng.normal(0.3, 0.1, 8), compression=comp,
                               perturbations=(("blur", "noise"), ("none",), ("blur",))[i % 3]))
    for i in range(12):
        ss = None if i == 11 else i / 10
        out.append(VideoResult(f"f{i}", 1, rng.normal(0.2 + 0.05 * i, 0.1, 8), method=("df", "liae")[i % 2],
                               compression=("c23", "c40")[i % 2], perturbations=(("none",), ("blur", "noise"))[i % 2],
                               swap_success=ss))
    return out


def test_breakdown_counts_sum_to_the_whole():
    videos = _videos()
    rows = breakdown(videos, n_boot=200)
    for level in ("frame", "video"):
        mine = [r for r in rows if r["level"] == level]
        whole = next(r for r in mine if r["slice"] == "all")
        assert (whole["n_real"], whole["n_fake"], whole["n_real_frames"], whole["n_fake_frames"]) == (6, 12, 48, 96)
        by = lambda name: [r for r in mine if r["slice"] == name]  # noqa: E731
        assert sum(r["n_fake"] for r in by("method")) == 12
        assert all(r["n_real"] == 6 and r["reals"] == "all" for r in by("method") + by("quality"))
        assert sum(r["n_fake"] for r in by("quality")) == 12
        assert {r["value"] for r in by("quality")} == {"low", "mid", "high", "unmeasured"}
        assert sum(r["n_real"] for r in by("compression")) == 6
        assert sum(r["n_fake"] for r in by("compression")) == 12
        assert all(r["reals"] == "slice" for r in by("compression") + by("perturbation"))
        # a video with a mix is counted under each of its kinds
        pert = {r["value"]: r for r in by("perturbation")}
        assert [pert[k]["n_real"] for k in ("blur", "noise", "none")] == [4, 2, 2]
        assert [pert[k]["n_fake"] for k in ("blur", "noise", "none")] == [6, 6, 6]
        for r in mine:
            assert 0 <= r["auc_lo"] <= r["auc"] <= r["auc_hi"] <= 1, r
    # poor swaps score like reals, good ones higher: the high bucket is easier than the low one
    q = {r["value"]: r["auc"] for r in rows if r["slice"] == "quality" and r["level"] == "video"}
    assert q["high"] > q["low"]


def test_breakdown_slice_without_reals_is_nan_and_rows_are_stable():
    videos = [v for v in _videos() if not (v.label == 0 and v.compression == "c40")]
    rows = breakdown(videos, n_boot=100, seed=3)
    c40 = next(r for r in rows if r["slice"] == "compression" and r["value"] == "c40" and r["level"] == "video")
    assert c40["n_real"] == 0 and np.isnan(c40["auc"])
    # a row's interval does not depend on the other slices: drop the c40 fakes too and c23 is unchanged
    fewer = breakdown([v for v in videos if v.compression != "c40"], n_boot=100, seed=3)
    key = lambda rs: next(r for r in rs if r["slice"] == "compression" and r["value"] == "c23"  # noqa: E731
                          and r["level"] == "frame")
    assert (key(rows)["auc"], key(rows)["auc_lo"], key(rows)["auc_hi"]) == \
        (key(fewer)["auc"], key(fewer)["auc_lo"], key(fewer)["auc_hi"])

"""``dflray evaluate``: a reference detector trained on a generated dataset, AUC per slice, end to end.

The shared generated sample (``generated_sample``: two people, every video in train) is copied per test,
so that the results and the report written into a dataset root stay the test's own; the copies keep the
sample's work location (its faceset), where the crop cache and the detector runs go. The options are
small (16 crops of 64 px per video, 2 epochs, 200 bootstrap replicates): the figures are not the point,
their consistency is. The dataset made from real footage (../shared/media) is evaluated in
test_generate.py's test_shared_media_two_real_people, on the dataset that test generates.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dflray.cli import main
from dflray.io.schema import read_table

SMALL = ["frames=16", "size=64", "epochs=2", "batch_size=16", "bootstrap=200"]


def _copy(generated_sample: str, dst: Path) -> str:
    shutil.copytree(generated_sample, dst)
    return str(dst)


def _results(dataset: str) -> list[dict]:
    return read_table("evaluation", [str(Path(dataset) / "evaluation.parquet")]).to_pylist()


def _check_results(rows: list[dict]) -> None:
    """AUCs in [0, 1] inside their intervals, and the breakdown's counts add up to the whole."""
    assert rows
    for level in ("frame", "video"):
        mine = [r for r in rows if r["level"] == level]
        whole = next(r for r in mine if r["slice"] == "all")
        assert whole["n_real"] > 0 and whole["n_fake"] > 0
        assert whole["n_real"] + whole["n_fake"] == whole["test_videos"]
        for r in mine:
            if r["n_real"] and r["n_fake"]:
                assert 0 <= r["auc_lo"] <= r["auc"] <= r["auc_hi"] <= 1, r
            else:
                assert np.isnan(r["auc"]), r
        by = lambda name: [r for r in mine if r["slice"] == name]  # noqa: E731
        for name in ("method", "quality"):  # the slice's fakes against all reals
            assert sum(r["n_fake"] for r in by(name)) == whole["n_fake"], name
            assert all(r["n_real"] == whole["n_real"] and r["reals"] == "all" for r in by(name))
        assert sum(r["n_fake"] for r in by("compression")) == whole["n_fake"]
        assert sum(r["n_real"] for r in by("compression")) == whole["n_real"]
        # a video with a mix of distortions counts under each of its kinds: at least once each
        assert sum(r["n_fake"] for r in by("perturbation")) >= whole["n_fake"]
        assert sum(r["n_fake_frames"] for r in by("method")) == whole["n_fake_frames"]


def _report_rows(dataset: str) -> tuple[str, list[str]]:
    text = (Path(dataset) / "report.html").read_text("utf-8")
    assert '<section id="evaluation">' in text
    section = text.split('<section id="evaluation">', 1)[1].split("</section>", 1)[0]
    return section, [line for line in section.split("<tr ")[1:]]


def test_evaluate_sample_with_holdout(ray_local, generated_sample, tmp_path, capsys):
    ds = _copy(generated_sample, tmp_path / "ds")
    before = {p.relative_to(ds) for p in Path(ds).rglob("*")}
    index = [r for r in pq.read_table(Path(ds) / "index.parquet").to_pylist() if r["status"] == "ok"]
    assert {r["split"] for r in index} == {"train"}, "the sample has no test split: the holdout is needed"

    # a bad option fails before any work, naming the field; so does a dataset with nothing to test on
    for args, field in ((["holdout=1.5"], "holdout"), (["epochs=0"], "epochs"), (["holdout=0"], "holdout=0.5"),
                        ([f"weights={tmp_path / 'nope.pt'}"], "weights")):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", ds, *args])
        assert e.value.code == 2
        assert field in capsys.readouterr().err
    assert not (Path(ds) / "evaluation.parquet").exists()

    assert main(["evaluate", ds, *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "holdout" in printed and "not identity-disjoint" in printed
    rows = _results(ds)
    _check_results(rows)
    r0 = rows[0]
    assert r0["protocol"] == "holdout" and r0["dataset"] == ds and r0["train_dataset"] == ds
    assert r0["failed_videos"] == 0 and r0["init_weights"] is None and r0["shared_identities"] == 2
    # the held-out real videos go with their fakes: nothing made from a tested real video was trained on
    assert r0["train_videos"] + r0["test_videos"] == len(index)
    assert Path(r0["detector_uri"]).is_file() and not r0["detector_uri"].startswith(ds + "/")

    # only the results and the report were added to the dataset root; working files went to its work location
    after = {p.relative_to(ds) for p in Path(ds).rglob("*")}
    assert Path("evaluation.parquet") in after and after - before <= {Path("evaluation.parquet"), Path("report.html")}
    section, trs = _report_rows(ds)
    assert "within-split holdout" in section
    assert len(trs) == len([r for r in rows if r["level"] == "frame"])

    # the trained detector given by path, untrained (epochs=0), scores the same crops alike
    (Path(ds) / "evaluation.parquet").rename(tmp_path / "first.parquet")
    assert main(["evaluate", ds, *SMALL, "epochs=0", f"weights={r0['detector_uri']}", "--no-report"]) == 0
    again = _results(ds)
    key = lambda r: (r["level"], r["slice"], r["value"])  # noqa: E731
    first = {key(r): r for r in read_table("evaluation", [str(tmp_path / "first.parquet")]).to_pylist()}
    assert {key(r) for r in again} == set(first)
    for r in again:
        assert r["epochs"] == 0 and r["init_weights"] == r0["detector_uri"]
        for k in ("auc", "n_real", "n_fake", "n_real_frames", "n_fake_frames"):
            assert r[k] == pytest.approx(first[key(r)][k], abs=1e-6, nan_ok=True), (key(r), k)


def test_cross_dataset(ray_local, generated_sample, tmp_path, capsys):
    """Train on one dataset (starting from another detector's weights), test on another: videos made from
    a real video that is tested are never trained on, and the results name both datasets."""
    a = _copy(generated_sample, tmp_path / "a")
    b = _copy(generated_sample, tmp_path / "b")
    # weights from elsewhere: a plain state dict of a detector (as torch.save(model.state_dict()) writes it)
    import torch

    from dflray.models.detector import build_detector

    torch.manual_seed(1)
    init = tmp_path / "b0.pth"
    torch.save(build_detector(64).state_dict(), init)
    report = Path(b) / "report.html"
    report_before = report.read_bytes() if report.exists() else None
    assert main(["evaluate", b, "--train-dataset", a, *SMALL, "epochs=1", f"weights={init}", "--no-report"]) == 0
    capsys.readouterr()
    rows = _results(b)
    _check_results(rows)
    r0 = rows[0]
    assert (r0["dataset"], r0["train_dataset"], r0["init_weights"]) == (b, a, str(init))
    assert r0["shared_identities"] is None, "identity labels of two datasets are not comparable"
    # b's held-out real videos are the same source videos as a's: a trains on the rest only
    index = [r for r in pq.read_table(Path(a) / "index.parquet").to_pylist() if r["status"] == "ok"]
    assert r0["train_videos"] == len(index) - r0["test_videos"]
    # --no-report leaves b's report as it was; the training dataset gets no results
    assert (report.read_bytes() if report.exists() else None) == report_before
    assert not (Path(a) / "evaluation.parquet").exists()

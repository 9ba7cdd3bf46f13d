"""The dataset report: a self-contained HTML page, checked as text and in headless Chromium.

The browser test drives the Debian chromium/chromedriver through Selenium (no driver download: the
service names the driver's path and SE_OFFLINE is set) and skips with the reason when any is missing.
No Ray is started.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from dflray.config import QUALITY_METRICS as METRICS
from dflray.dataset.report import build_report, perturbation_kinds
from dflray.io.schema import table_from_rows
from dflray.io.video import VideoWriter, decode_range
from dflray.sample import make_sample

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INJECTED = '<script>window.__pwned = 1;</script>'
ATTR_BREAK = '"><img src=x onerror="window.__pwned = 2">'
NAN = float("nan")


def _draw_fake(src: str, dst: str, color: tuple[int, int, int]) -> None:
    frames = [f for _, f in decode_range(src)]
    h, w = frames[0].shape[:2]
    with VideoWriter(dst, fps=25, size=(w, h)) as wr:
        for i, f in enumerate(frames):
            f = f.copy()
            cv2.circle(f, (w // 2 + i, h // 2), w // 5, color, -1)  # the "swapped face"
            wr.write(f)


def _metrics(base: float) -> dict:
    # swap_success, first of METRICS, gets ``base`` itself: a share in [0, 1]
    return {m: base + k * 0.1 for k, m in enumerate(METRICS)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    """A small dataset: 2 reals, 5 fakes over two splits; one fake with NaN metrics, one whose video is
    missing, one whose strings carry a script injection."""
    root = tmp_path_factory.mktemp("dataset")
    clips = make_sample(str(root / "src"), seconds=1.0, size=128)
    (root / "real").mkdir()
    (root / "fake").mkdir()
    reals = {}
    for clip, split, person in zip(clips, ("train", "test"), ("collins", "hopper")):
        vid = Path(clip).stem
        shutil.move(clip, root / "real" / f"{vid}.mp4")
        reals[vid] = {"video_id": vid, "name": f"{vid}.mp4", "path": f"real/{vid}.mp4", "label": "REAL",
                      "split": split, "target_identity": person, "compression": "c23", "perturbation": "none",
                      "status": "ok", "frames": 25, "dataset_id": "ds-test-1"}
    a, g = list(reals)
    fake_specs = [
        # video_id, original, source identity, perturbation, metrics, quality_pass, reasons, status, write?
        ("fake_a1", a, "hopper", "blur:3", _metrics(0.30), True, "", "ok", (255, 0, 0)),
        ("fake_g1", g, "collins", "noise:2+contrast:1", _metrics(0.90), False, "id_distance_source>0.6", "ok",
         (0, 255, 0)),
        ("fake_a_nan", a, "hopper", "none", {m: NAN for m in METRICS}, None, "", "ok", (0, 0, 255)),
        ("fake_g_missing", g, "collins", "block:4", _metrics(0.50), False, "pose_error>20; seam>2", "dropped", None),
        ("fake_a_evil", a, INJECTED, "none", _metrics(0.10), True, "", "ok", (255, 255, 0)),
    ]
    rows = list(reals.values())
    for vid, orig, src_id, pert, metrics, qpass, reasons, status, color in fake_specs:
        path = f"fake/{vid}.mp4"
        if color is not None:
            _draw_fake(str(root / reals[orig]["path"]), str(root / path), color)
        name = f"{INJECTED}.mp4" if vid == "fake_a_evil" else f"{vid}.mp4"
        rows.append({"video_id": vid, "name": name, "path": path, "label": "FAKE", "split": reals[orig]["split"],
                     "original": orig, "original_name": reals[orig]["name"], "source_identity": src_id,
                     "target_identity": reals[orig]["target_identity"],
                     "method": ATTR_BREAK if vid == "fake_a_evil" else "dflray-liae-ud",
                     "compression": "c23", "perturbation": pert, "quality_pass": qpass, "quality_reasons": reasons,
                     "status": status, "frames": 25, "dataset_id": "ds-test-1", "mode": "overlay", **metrics})
    pq.write_table(table_from_rows("dataset", rows), root / "index.parquet")
    # fake_a1's largest manipulation is at frame 7: the report should show that frame
    frames = [{"video_id": "fake_a1", "frame_index": i, "mask_area": 0.5 if i == 7 else 0.1} for i in range(25)]
    pq.write_table(table_from_rows("dataset_frames", frames), root / "frames.parquet")
    out = root / "report.html"
    counts = build_report(str(root), str(out), thumb_size=96)
    return {"root": root, "out": out, "counts": counts, "rows": rows,
            "fakes": [s[0] for s in fake_specs], "html": out.read_text("utf-8")}


# ------------------------------------------------------------------------------ without a browser


def test_counts_returned(dataset):
    c = dataset["counts"]
    assert (c["videos"], c["reals"], c["fakes"], c["rows"], c["histograms"]) == (7, 2, 5, 5, len(METRICS))
    # the 5 originals and the 4 fakes with a video decode; the missing fake is a placeholder
    assert (c["thumbnails"], c["placeholders"]) == (9, 1)
    assert not list(dataset["root"].glob(".tmp-*")), "atomic write left its temporary file"


class _Tags(HTMLParser):
    """The tags and attributes of a page, as a browser's tokenizer sees them (escaped text is text)."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_self_contained_and_escaped(dataset):
    text = dataset["html"]
    parser = _Tags()
    parser.feed(text)
    refs = [(tag, k, v or "") for tag, attrs in parser.tags for k, v in attrs.items() if k in ("src", "href")]
    assert len(refs) >= 2 * 5 + len(METRICS), "thumbnails and histograms expected as img src"
    outside = [(t, k, v[:40]) for t, k, v in refs if not v.startswith("data:")]
    assert not outside, outside
    assert not re.search(r"https?://|url\(|@import", text, flags=re.I)
    assert not any(tag in ("link", "iframe", "object", "embed") for tag, _ in parser.tags)
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts == [{}], "only the page's own inline script may be a script tag"
    assert not any(k.startswith("on") for _, attrs in parser.tags for k in attrs), "an event handler attribute leaked"
    assert "&lt;script&gt;window.__pwned" in text
    assert "ds-test-1" in text and "provenance-tagged" in text
    rows = [attrs["data-video-id"] for tag, attrs in parser.tags if tag == "tr" and "data-video-id" in attrs]
    assert sorted(rows) == sorted(dataset["fakes"])


def test_every_count_and_metric_is_broken_down_by_method(dataset):
    """The by-method table: fakes per status, gates passed and the median of every metric over the measured
    (ok or dropped) fakes of each method; NaN metrics and unmeasured gates left out."""
    text = dataset["html"]
    parser = _Tags()
    parser.feed(text)
    cells: dict[tuple[str, str], str] = {}
    for m in re.finditer(r'<td data-method="([^"]*)" data-(status|metric)="([^"]*)">([^<]*)</td>', text):
        cells[(html_unescape(m.group(1)), m.group(3))] = m.group(4)
    liae = "dflray-liae-ud"
    assert (cells[(liae, "ok")], cells[(liae, "dropped")]) == ("3", "1")
    assert cells[(liae, "swap_success")] == "0.5"  # median of 0.30, 0.90, 0.50 (the NaN fake left out)
    assert cells[(liae, "id_distance_source")] == "0.6"  # each metric: base + 0.1
    assert cells[(liae, "quality_pass")] == "0.333"  # 1 of 3 gated fakes passed
    assert (cells[(ATTR_BREAK, "ok")], cells[(ATTR_BREAK, "dropped")]) == ("1", "0")
    assert cells[(ATTR_BREAK, "swap_success")] == "0.1"
    assert text.index('id="counts"') < text.index('id="by-method"') < text.index('id="fakes"')


def test_swap_success_headline_comes_first(dataset):
    text = dataset["html"]
    parser = _Tags()
    parser.feed(text)
    sections = [attrs["id"] for tag, attrs in parser.tags if tag == "section"]
    assert sections[0] == "headline"
    # Published fakes only (fake_g_missing was dropped), one NaN among them: 0.3, 0.9 and 0.1 measured.
    mean = next(float(a["data-mean"]) for t, a in parser.tags if "data-mean" in a)
    assert mean == pytest.approx((0.3 + 0.9 + 0.1) / 3, abs=1e-6)
    assert next(a["data-ge50"] for t, a in parser.tags if "data-ge50" in a) == "1"
    assert "mean swap_success over 3 published fakes" in text and "1 not measured" in text
    figures = [a["data-metric"] for t, a in parser.tags if t == "figure"]
    assert figures == list(METRICS), "swap_success's histogram leads, then the other metrics, each once"
    columns = [a["data-column"] for t, a in parser.tags if t == "th" and "data-column" in a]
    assert columns[columns.index("swap_success"):][:len(METRICS)] == list(METRICS)


def test_perturbation_kinds():
    assert perturbation_kinds("noise:2+contrast:1") == ["noise", "contrast"]
    assert perturbation_kinds("none") == perturbation_kinds("") == ["none"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="index.parquet"):
        build_report(str(tmp_path), str(tmp_path / "r.html"))
    with pytest.raises(ValueError, match="thumb_size"):
        build_report(str(tmp_path), str(tmp_path / "r.html"), thumb_size=4)


def test_max_rows_keeps_the_worst(dataset, tmp_path):
    out = tmp_path / "r.html"
    c = build_report(str(dataset["root"]), str(out), max_rows=2)
    assert c["rows"] == 2
    ids = re.findall(r'<tr data-video-id="([^"]+)"', out.read_text("utf-8"))
    assert ids == ["fake_g_missing", "fake_g1"]  # two failed gates, then one


# ------------------------------------------------------------------------------ in headless Chromium


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.access(exe, os.X_OK):
            pytest.skip(f"{exe} is absent (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    saved = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,1800",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield d
    finally:
        d.quit()
        if saved is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = saved


def _column_values(driver, col: int) -> list[float]:
    return driver.execute_script(
        "var col = arguments[0];"
        " return Array.from(document.querySelectorAll('#fakes-table tbody tr')).map(function(r){"
        " var v = r.cells[col].getAttribute('data-value'); return v === '' ? null : parseFloat(v); });", col)


def test_report_in_chromium(dataset, driver, tmp_path):
    from selenium.webdriver.common.by import By

    driver.get(dataset["out"].resolve().as_uri())
    assert driver.title == "dflray dataset report: ds-test-1"
    assert driver.execute_script("return window.__pwned === undefined"), "an injected script ran"
    assert driver.find_elements(By.XPATH, "//*[contains(text(), 'window.__pwned = 1;')]"), "escaped text not shown"

    def cell(table, key, value, label):
        return driver.find_element(By.CSS_SELECTOR, f'#{table} td[data-{key}="{value}"][data-label="{label}"]').text

    expect = {("train", "REAL"): "1", ("train", "FAKE"): "3", ("test", "REAL"): "1", ("test", "FAKE"): "2",
              ("train", "total"): "4", ("test", "total"): "3"}
    assert {k: cell("counts-split", "split", *k) for k in expect} == expect
    assert cell("counts-status", "status", "dropped", "FAKE") == "1"
    assert cell("counts-status", "status", "ok", "FAKE") == "4"
    assert cell("counts-perturbation", "perturbation", "none", "FAKE") == "2"
    assert cell("counts-perturbation", "perturbation", "noise", "FAKE") == "1"

    ids = [r.get_attribute("data-video-id") for r in driver.find_elements(By.CSS_SELECTOR, "#fakes-table tbody tr")]
    assert sorted(ids) == sorted(dataset["fakes"])
    thumbs = driver.execute_script(
        "return Array.from(document.querySelectorAll('#fakes-table img.thumb')).map(function(i){"
        " return [i.closest('tr').getAttribute('data-video-id'), i.className, i.complete, i.naturalWidth]; });")
    assert len(thumbs) == 2 * len(dataset["fakes"])
    assert all(complete and width > 0 for _, _, complete, width in thumbs), thumbs
    placeholders = sorted((vid, "fake" in cls) for vid, cls, _, _ in thumbs if "placeholder" in cls)
    assert placeholders == [("fake_g_missing", True)]
    frames = {r.get_attribute("data-video-id"): r.find_element(By.CSS_SELECTOR, "td.thumbs").get_attribute("data-frame")
              for r in driver.find_elements(By.CSS_SELECTOR, "#fakes-table tbody tr")}
    assert frames["fake_a1"] == "7" and frames["fake_g1"] == "12"
    hists = driver.execute_script(
        "return Array.from(document.querySelectorAll('figure.histogram img')).map(function(i){"
        " return [i.closest('figure').getAttribute('data-metric'), i.naturalWidth]; });")
    assert [m for m, _ in hists] == list(METRICS) and all(w > 0 for _, w in hists)

    # sorting: a numeric column ascending, then descending; NaN rows stay last
    heads = driver.find_elements(By.CSS_SELECTOR, "#fakes-table thead th")
    col = next(i for i, h in enumerate(heads) if h.get_attribute("data-column") == "pose_error")
    heads[col].click()
    asc = _column_values(driver, col)
    finite = [v for v in asc if v is not None]
    assert len(finite) == 4 and finite == sorted(finite) and asc[-1] is None
    assert heads[col].get_attribute("aria-sort") == "ascending"
    heads[col].click()
    desc = _column_values(driver, col)
    assert [v for v in desc if v is not None] == finite[::-1] and desc[-1] is None
    assert math.isclose(finite[0], 0.1 + METRICS.index("pose_error") * 0.1, rel_tol=1e-6)  # fake_a_evil's pose_error
    # the headline metric sorts the same way
    scol = next(i for i, h in enumerate(heads) if h.get_attribute("data-column") == "swap_success")
    heads[scol].click()
    success = _column_values(driver, scol)
    assert [v for v in success if v is not None] == pytest.approx([0.1, 0.3, 0.5, 0.9]) and success[-1] is None
    assert driver.find_element(By.CSS_SELECTOR, "#headline .figure").text == "0.43"
    # text columns sort too
    vcol = next(i for i, h in enumerate(heads) if h.get_attribute("data-column") == "video_id")
    heads[vcol].click()
    ids = [r.get_attribute("data-video-id") for r in driver.find_elements(By.CSS_SELECTOR, "#fakes-table tbody tr")]
    assert ids == sorted(dataset["fakes"])

    # The table's real/fake thumbnails in view (the histograms above them grow with QUALITY_METRICS).
    driver.execute_script("document.querySelector('#fakes-table').scrollIntoView()")
    png = driver.get_screenshot_as_png()
    (tmp_path / "report.png").write_bytes(png)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 200
    assert img.std() > 20, "screenshot is blank"
    colours = np.unique((img // 16).reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"screenshot has only {len(colours)} colours"


def test_fsspec_root_and_empty_index(dataset, tmp_path):
    """Any fsspec URL works as the dataset root and the output; an empty index still gives a page."""
    import fsspec

    mem = fsspec.filesystem("memory")
    root = "memory://report-test/ds"
    for f in dataset["root"].rglob("*"):
        if f.is_file() and f.suffix in (".mp4", ".parquet"):
            mem.pipe(f"/report-test/ds/{f.relative_to(dataset['root']).as_posix()}", f.read_bytes())
    try:
        c = build_report(root, root + "/report.html", thumb_size=64)
        assert (c["fakes"], c["thumbnails"], c["placeholders"]) == (5, 9, 1)
        assert mem.cat("/report-test/ds/report.html").startswith(b"<!DOCTYPE html>")
    finally:
        mem.rm("/report-test", recursive=True)

    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(table_from_rows("dataset", []), empty / "index.parquet")
    c = build_report(str(empty), str(empty / "report.html"))
    assert (c["videos"], c["fakes"], c["rows"], c["histograms"]) == (0, 0, 0, len(METRICS))
    text = (empty / "report.html").read_text("utf-8")
    assert "<tr data-video-id" not in text and '<td data-label="total">0</td>' in text
    assert "no published fake has a swap_success" in text

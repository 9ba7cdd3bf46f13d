"""XSeg test-recipe spread: how much the XSeg integration test's figures move from one training run to the next.

``tests/integration/test_xseg_train.py`` trains one small XSeg model (its ``TRAIN`` settings) on the sample's
faces and, when ../shared/media is present, on the real people of three media clips, then asserts that on
occlusions the model never saw its mask beats the landmark hull: the mean IoU gain over a bound and a paired
Wilcoxon p-value under a bound. Training is not bit-for-bit repeatable (Ray Data shuffles and the occluders
are drawn afresh on every pass), so the test's bounds must sit where a run cannot fall by chance.

This trains the test's recipe ``--runs`` times (each with another ``seed=``), on the facesets the test
builds (extracted once, cached), and prints for each run and each faceset the gain and p as the test
computes them (its own functions), then their mean, standard deviation, minimum and how many standard
deviations the test's bounds sit below the mean.

This is a benchmark, not a test: nothing is asserted. Run ``python bench/xseg_spread.py --help``; see
bench/README.md for the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from extract import Monitor, quiet_ray, say, table  # noqa: E402  (bench/extract.py)

from dflray.config import ExtractConfig, load_config  # noqa: E402
from tests.integration import test_xseg_train as recipe  # noqa: E402  (the test's settings and measures)

RAY_CPUS = 2


def facesets(cache: str, media: bool = True) -> list[str]:
    """The test's facesets (its ``trained`` fixture's extraction), made once under ``cache``."""
    from dflray.extract import run_extract
    from dflray.sample import make_sample
    from tests.media import SHARED_MEDIA

    os.makedirs(cache, exist_ok=True)
    out = [os.path.join(cache, "faceset")]
    if not os.path.isdir(os.path.join(out[0], "faces")):
        sample = make_sample(os.path.join(cache, "sample"), seconds=2.0, size=320)
        run_extract(list(sample), out[0], load_config(ExtractConfig, overrides=["align.size=128",
                                                                               "landmarks.embedding=false"]))
    clips = [SHARED_MEDIA / n for n in recipe.MEDIA]
    if not media:
        say("  --no-media: the sample's faceset only, as in CI")
    elif all(m.is_file() for m in clips):
        out.append(os.path.join(cache, "media_faceset"))
        if not os.path.isdir(os.path.join(out[1], "faces")):
            run_extract([str(m) for m in clips], out[1],
                        load_config(ExtractConfig, overrides=["align.size=128", "landmarks.embedding=false",
                                                              "decode.every_n=10"]))
    else:
        say(f"  {SHARED_MEDIA} is absent: the sample's faceset only")
    return out


def measure(model_path: str, sets: list[str]) -> list[tuple[float, float, float, float]]:
    """Per faceset, as the test computes them: (XSeg IoU, hull IoU, mean gain, one-sided Wilcoxon p)."""
    from dflray.artifacts.xseg import load_xseg

    model = load_xseg(model_path)
    rows = []
    for faceset, seed in zip(sets, recipe.HELD_OUT_SEEDS):
        xseg, hull, gain, p = recipe.held_out_gain(model, faceset, seed)
        rows.append((float(xseg.mean()), float(hull.mean()), float(gain.mean()), p))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5,
                    help="training runs (default 5; each ~9 min on 2 cores with the media, ~3 without)")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps (default: the test's, MEDIA_STEPS when ../shared/media is present)")
    ap.add_argument("--no-media", action="store_true", help="train and measure on the sample's faceset only (CI's case)")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dflray-bench-cache", "xseg-spread"),
                    help="where the test's facesets are kept between runs")
    args = ap.parse_args(argv)
    from dflray.cli import main as cli

    say("dflray XSeg test-recipe spread")
    say(f"  machine: {psutil.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}; python "
        f"{platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}")
    quiet_ray(RAY_CPUS)
    sets = facesets(args.cache_dir, media=not args.no_media)
    steps = args.steps or (recipe.MEDIA_STEPS if len(sets) > 1 else recipe.STEPS)
    train = [*recipe.TRAIN, f"steps={steps}"]
    say(f"  recipe: {' '.join(train)}; the test's bounds: gain > {recipe.MIN_GAIN}, p < {recipe.MAX_P}")
    names = [os.path.basename(s) for s in sets]
    results: list[list[tuple[float, float, float, float]]] = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="dflray-bench-xseg-spread-") as work:
        for i in range(args.runs):
            out = os.path.join(work, f"run{i}")
            mon = Monitor()
            with mon:
                t = time.perf_counter()
                code = cli(["xseg", "train", *sets, "--out", out, *train, f"seed={i}"])
                seconds = time.perf_counter() - t
            if code != 0:
                raise SystemExit(f"run {i}: dflray xseg train exited {code}")
            res = measure(os.path.join(out, "xseg.pt"), sets)
            results.append(res)
            cells = [str(i), f"{seconds:.0f}", f"{mon.other / mon.wall:.2f}"]
            for x, h, g, p in res:
                cells += [f"{x:.3f}", f"{h:.3f}", f"{g:+.3f}", f"{p:.1e}"]
            rows.append(cells)
            say(f"  run {i}: {seconds:.0f} s; " + "; ".join(f"{n} gain {g:+.3f} p {p:.1e}"
                                                       for n, (_, _, g, p) in zip(names, res)))
    head = ["run", "seconds", "other load"]
    for n in names:
        head += [f"{n} XSeg", "hull", "gain", "p"]
    say("")
    say(table(head, rows))
    say("")
    for k, n in enumerate(names):
        gains = [r[k][2] for r in results]
        logp = [float(np.log10(r[k][3])) for r in results]
        sd = statistics.stdev(gains) if len(gains) > 1 else float("nan")
        say(f"  {n}: gain mean {statistics.mean(gains):+.4f}, sd {sd:.4f}, min {min(gains):+.4f}, max {max(gains):+.4f}; "
            f"the bound {recipe.MIN_GAIN} sits {(statistics.mean(gains) - recipe.MIN_GAIN) / sd:.1f} sd below the mean; "
            f"log10 p: mean {statistics.mean(logp):.1f}, worst {max(logp):.1f} (bound {np.log10(recipe.MAX_P):.1f})")
    ray.shutdown()


if __name__ == "__main__":
    main()

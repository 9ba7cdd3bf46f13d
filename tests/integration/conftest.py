"""Integration tier: one local Ray (2 CPUs) per test module."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def sample_clips(tmp_path_factory):
    from dflray.sample import make_sample

    return make_sample(str(tmp_path_factory.mktemp("sample")), seconds=2.0, size=320)


# The tiny models and settings of a generated dataset in the tests (minutes on 2 CPUs, not hours).
TINY_GENERATE = ["models.train.model.resolution=64", "models.train.model.ae_dims=64", "models.train.model.e_dims=16",
                 "models.train.model.d_dims=16", "models.train.model.d_mask_dims=8", "models.train.batch_size=4",
                 "models.train.preview_every=0", "models.train.log_every=5", "models.train.steps=6",
                 "models.train.checkpoint_every=6", "models.train.cpus_per_worker=0.5",
                 "models.train.augment_cpus=0.5", "models.concurrency=2", "extract.align.size=128",
                 "perturb.preset=ultrafast", "quality.sample_frames=3"]
# The generated sample's plan: c0 and c23, every video perturbed, gates that flag every fake, fine-tuning
# from a pretrained base.
GENERATED_EXTRA = ["dataset_id=test-ds", "splits={train: 1.0, val: 0.0, test: 0.0}",
                   "perturb.compression=[c0, c23]", "perturb.fraction=1.0", "perturb.mix_fraction=0.5",
                   "quality.gates=[{metric: seam, max: 1000.0}, {metric: pose_error, max: 0.001}]",
                   "models.base=pretrain", "models.pretrain_steps=4"]


@dataclass
class Generated:
    """The generated sample: its clips (the sample's four plus a broken file), root, plan and summary, and
    the state a SIGKILLed first run left (see ``generated``)."""

    clips: list[str]
    out: str
    cfg: Any
    summary: Any
    state: dict


def generated_plan(clips: list[str], *extra: str):
    """The generated sample's plan over ``clips``, with more overrides."""
    from dflray.config import GenerateConfig, load_config

    return load_config(GenerateConfig, overrides=[f"videos={json.dumps(clips)}", *GENERATED_EXTRA[:2],
                                                  "merge.vary=[{field: mode, choices: [overlay, seamless]}]",
                                                  *TINY_GENERATE, *extra])


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Generated:
    """One flat dataset on the sample (two people, two clips each) plus a broken file, made the hard way and
    shared by every test that reads a generated dataset (generate, export, evaluate): ``dflray generate`` in
    a subprocess (a driver joined to a local Ray cluster) is SIGKILLed once its first fake is merged; a
    rerun finishes it. Half the fakes take an XSeg mask mode. It uses the running Ray, else starts one and
    shuts it down after."""
    import ray

    from dflray.artifacts.xseg import save_xseg
    from dflray.dataset.pipeline import run_generate
    from dflray.sample import make_sample
    from tests.unit.merge.test_merge_blend import constant_xseg

    root = tmp_path_factory.mktemp("gen")
    clips = make_sample(str(root / "clips"), seconds=1.2, size=256, variants=2)
    broken = root / "clips" / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    clips = [*clips, str(broken)]
    out = root / "ds"
    plan = root / "plan.yaml"
    plan.write_text(json.dumps({"videos": clips}))
    # A real XSeg network set to call every pixel face: the merge workers load and run it without changing
    # what the dataset checks.
    save_xseg(constant_xseg(30.0), str(root / "xseg.pt"))
    xseg = [f"merge.xseg={root / 'xseg.pt'}", "merge.vary=[{field: mode, choices: [overlay, seamless]}, "
            "{field: mask_mode, choices: [learned-prd*learned-dst, XSeg-prd*XSeg-dst]}]"]
    cfg = generated_plan(clips, *GENERATED_EXTRA[2:], *xseg)
    overrides = [*GENERATED_EXTRA[:2], "merge.vary=[{field: mode, choices: [overlay, seamless]}]", *TINY_GENERATE,
                 *GENERATED_EXTRA[2:], *xseg]
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        address = ray.get_runtime_context().gcs_address
        log = open(root / "killed_run.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "dflray.cli", "generate", str(plan), "--out", str(out),
                                 "--address", address, *overrides], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(root))
        work = Path(f"{out}.work")  # the work location, beside the published root
        records = work / "fakes" / "records"
        deadline = time.monotonic() + 900
        while proc.poll() is None and time.monotonic() < deadline and not list(records.glob("*.parquet")):
            time.sleep(0.2)
        finished_first = proc.poll() is not None
        if not finished_first:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        state = {"finished_first": finished_first, "index_at_kill": (out / "index.parquet").exists(),
                 "merged_at_kill": len(list(records.glob("*.parquet"))),
                 "models": {p: p.stat().st_mtime_ns for p in (work / "models").glob("*/model.json")},
                 "faceset": {p: p.stat().st_mtime_ns for p in (work / "faceset" / "videos").glob("*.parquet")},
                 "log": (root / "killed_run.log").read_text(errors="replace")[-3000:]}
        summary = run_generate(cfg, str(out))
    finally:
        if started:
            ray.shutdown()
    return Generated(clips, str(out), cfg, summary, state)


@pytest.fixture(scope="session")
def generated_sample(generated) -> str:
    """The generated sample's root (its work location is beside it, as ``dflray generate`` puts it)."""
    return generated.out

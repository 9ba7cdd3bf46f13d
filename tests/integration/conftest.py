"""Integration tier: one local Ray (2 CPUs) per test module."""

import os

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


@pytest.fixture(scope="session")
def generated_sample(tmp_path_factory):
    """One flat dataset generated on the sample (two people, two clips each; tiny models, c23, every video
    in the train split), shared by the tests that read a generated dataset (export, evaluate). It starts
    its own local Ray unless one is running, and leaves Ray as it found it.

    Returns:
        The dataset root (its work location is beside it, as ``dflray generate`` puts it).
    """
    import json

    import ray

    from dflray.config import GenerateConfig, load_config
    from dflray.dataset.pipeline import run_generate
    from dflray.sample import make_sample

    root = tmp_path_factory.mktemp("generated_sample")
    clips = make_sample(str(root / "clips"), seconds=1.2, size=256, variants=2)
    out = root / "ds"
    cfg = load_config(GenerateConfig, overrides=[f"videos={json.dumps(clips)}", "dataset_id=sample-ds",
                                                 "splits={train: 1.0, val: 0.0, test: 0.0}",
                                                 "perturb.compression=[c23]", "perturb.fraction=0.5",
                                                 *TINY_GENERATE])
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        summary = run_generate(cfg, str(out), report=False)
    finally:
        if started:
            ray.shutdown()
    assert summary.published.get("ok", 0) >= 8, summary
    return str(out)

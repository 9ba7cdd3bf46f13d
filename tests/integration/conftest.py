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

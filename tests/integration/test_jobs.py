"""Real Ray job submission: a local head started with `ray start --head` (token authentication on),
jobs submitted with the `ray job submit` CLI and with JobSubmissionClient, as users run them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A real head node on 127.0.0.1 (2 CPUs, dashboard/job API on a free port), stopped however the
    tests end: it runs in the foreground (`--block`) in its own process group, which teardown kills."""
    if not Path(RAY).exists():
        pytest.skip(f"the ray CLI is not installed beside {sys.executable}")
    # `python` in an entrypoint is the cluster's Python (the one with Ray and dflray's dependencies):
    # here, this virtualenv's.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # The job agent's HTTP port too: its default (52365) is taken whenever another Ray runs on the machine (a
    # `dflray` job beside the tests), and a head whose agent cannot bind refuses every job submission.
    port, dash, agent = _free_port(), _free_port(), _free_port()
    log = open(tmp_path_factory.mktemp("head") / "head.log", "w")
    proc = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",
                             "--disable-usage-stats"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline, client, err = time.time() + 120, None, None
        token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        while time.time() < deadline and proc.poll() is None:
            try:
                # The head writes its token file when it starts; a remote client sends it as a bearer token.
                token = os.environ.get("RAY_AUTH_TOKEN") or token_file.read_text().strip()
                client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
                client.list_jobs()
                break
            except Exception as e:  # noqa: BLE001 - not up yet
                client, err = None, e
                time.sleep(1)
        if client is None:
            pytest.fail(f"the head did not come up: {err}; log: {Path(log.name).read_text()[-2000:]}")
        yield {"address": address, "env": env, "client": client}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)  # a graceful stop can take 30 s; the head is the test's own, so kill it after 10
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        # A killed head leaves its address in Ray's address file, where a later plain ray.init() (any
        # dflray command) would try to join the dead cluster: remove it if it is ours.
        from ray._common.utils import get_ray_address_file

        address_file = Path(get_ray_address_file(None))
        if address_file.is_file() and address_file.read_text().strip().endswith(f":{port}"):
            address_file.unlink()


def _submit(client, **kwargs) -> str:
    """submit_job, retried while the head's job agent is still starting (it comes up after the API)."""
    deadline = time.time() + 120
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)


def _wait(client, job_id: str, timeout: float = 600):
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(2)
    raise TimeoutError(f"job {job_id} still {status} after {timeout} s")


def test_cli_submit_extract_succeeds(head, sample_clips, tmp_path):
    from ray.job_submission import JobStatus

    out = tmp_path / "faceset"
    job_id = f"extract-{os.getpid()}-{int(time.time())}"
    cmd = [RAY, "job", "submit", "--address", head["address"], "--working-dir", str(ROOT), "--submission-id", job_id,
           "--", "python", "jobs/extract.py", sample_clips[0], "--out", str(out), "align.size=96",
           "landmarks.embedding=false"]
    res = subprocess.run(cmd, env=head["env"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert head["client"].get_job_status(job_id) == JobStatus.SUCCEEDED
    logs = head["client"].get_job_logs(job_id)
    assert "extract →" in logs and "ok 1" in logs
    from dflray.faceset import read_faces, read_videos

    assert read_videos(str(out)).column("status").to_pylist() == ["ok"]
    assert read_faces(str(out), columns=["frame_index"]).num_rows == 50


def test_client_submit_bad_argument_fails_with_the_error_in_its_logs(head):
    from ray.job_submission import JobStatus

    client = head["client"]
    job_id = _submit(client, entrypoint="python jobs/extract.py nowhere.mp4 --out /tmp/x detect.batch_size=0",
                               runtime_env={"working_dir": str(ROOT)})
    assert _wait(client, job_id) == JobStatus.FAILED
    logs = client.get_job_logs(job_id)
    assert "detect.batch_size: must be >= 1" in logs
    # the XSeg entrypoint too: a path that is no faceset fails before work, saying so
    job_id = _submit(client, entrypoint="python jobs/xseg.py apply /nonexistent/faceset --model /nonexistent/xseg.pt",
                     runtime_env={"working_dir": str(ROOT)})
    assert _wait(client, job_id) == JobStatus.FAILED
    assert "is not a faceset" in client.get_job_logs(job_id)


def test_client_submit_merge_job(head, sample_clips, tmp_path):
    """The merge job end to end through the job API: extract on the fly, exported untrained model."""
    import dataclasses

    import torch
    from ray.job_submission import JobStatus

    from dflray.artifacts.checkpoint import FORMAT, save_payload
    from dflray.config import ModelConfig
    from dflray.models import build_model

    mc = ModelConfig(resolution=64, ae_dims=64, e_dims=16, d_dims=16, d_mask_dims=8, face_type="whole_face")
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_payload(str(ckpt), {"format": FORMAT, "step": 0, "model_config": dataclasses.asdict(mc),
                             "model": build_model(mc).state_dict(), "run_config": {}})
    out = tmp_path / "merged"
    client = head["client"]
    job_id = _submit(
        client, entrypoint=f"python jobs/merge.py --model {ckpt} --dst {sample_clips[1]} --out {out} "
                   "extract.align.size=96 extract.landmarks.embedding=false output.preset=ultrafast",
        runtime_env={"working_dir": str(ROOT)})
    status = _wait(client, job_id)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-3000:]
    import pyarrow.parquet as pq

    rows = pq.read_table(str(out / "index.parquet")).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] and (out / rows[0]["path"]).is_file()
    shutil.rmtree(out)

"""Network helpers shared by the test tiers."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, read, released): connecting to it is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def local_s3() -> Iterator[dict[str, str]]:
    """A real S3 server (moto) on 127.0.0.1 for the block, its endpoint and test credentials in the
    environment (yielded too, for a Ray runtime env); skips the test when s3fs or moto[server] is absent."""
    import pytest

    pytest.importorskip("s3fs", reason="s3fs is needed for s3:// URLs")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] provides the local S3 server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    # fsspec caches filesystem instances by their options, not by the environment they read: one made
    # for an earlier server (or an unreachable endpoint) would be handed out again.
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield env
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

"""Network helpers shared by the test tiers."""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, read, released): connecting to it is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

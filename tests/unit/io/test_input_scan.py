"""What an input is (issue 15, defects 3, 4, 7): absolute normalised URIs, fingerprints, and inputs that
cannot be listed or match nothing reported as one-line problems instead of tracebacks."""

import json
import logging
import os
import subprocess
import sys

import pytest

from dflray.io.storage import expand_inputs
from tests.net import closed_port


def _touch(p, data=b"x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return str(p)


def test_relative_inputs_become_absolute_normalised_paths(tmp_path, monkeypatch):
    clip = _touch(tmp_path / "a" / "clip.mp4")
    _touch(tmp_path / "a" / "sub" / "keep.txt", b"")
    (tmp_path / "a" / "list.txt").write_text("./sub/../clip.mp4\n")
    monkeypatch.chdir(tmp_path / "a")
    # the same file typed three ways (and once through a manifest) is one input, recorded absolute
    assert expand_inputs(["clip.mp4", "sub/../clip.mp4", f"{tmp_path}/a/./clip.mp4", "list.txt"]) == [clip]
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["a//sub/../clip.mp4"]) == [clip]
    # a missing file is kept (absolute), so the job reports it as an error row
    assert expand_inputs(["nowhere/x.mp4"]) == [str(tmp_path / "nowhere" / "x.mp4")]


def test_normalize_uri_keeps_urls():
    from dflray.io.storage import normalize_uri

    assert normalize_uri("s3://bucket/a//b.mp4") == "s3://bucket/a//b.mp4"  # distinct S3 keys stay distinct
    assert normalize_uri("S3://bucket/A.mp4") == "s3://bucket/A.mp4"
    assert normalize_uri("HTTP://Example.COM/Clip.mp4?x=1") == "http://example.com/Clip.mp4?x=1"
    assert normalize_uri("file:///data/./x/../a.mp4") == "file:///data/a.mp4"
    assert normalize_uri("/data/x/../a.mp4") == "/data/a.mp4"


def test_fingerprint_is_size_and_mtime_and_changes_with_the_file(tmp_path):
    from dflray.io.storage import scan_inputs

    clip = _touch(tmp_path / "clip.mp4", b"0123456789")
    st = os.stat(clip)
    scan = scan_inputs([clip])
    assert scan.uris == [clip] and scan.problems == []
    assert scan.fingerprints[clip] == f"10:{st.st_mtime_ns}"
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert scan_inputs([clip]).fingerprints[clip] == f"10:{st.st_mtime_ns + 10**9}"
    # a folder's files are fingerprinted from the listing; a missing file has none (probe reports it)
    missing = str(tmp_path / "missing.mp4")
    scan = scan_inputs([str(tmp_path), missing])
    assert scan.uris == [clip, missing] and scan.fingerprints[missing] is None
    assert scan.fingerprints[clip] == f"10:{st.st_mtime_ns + 10**9}"


def test_memory_urls_have_fingerprints():
    import fsspec

    from dflray.io.storage import scan_inputs

    fs = fsspec.filesystem("memory")
    fs.pipe("/fpbucket/clips/x.mp4", b"12345")
    scan = scan_inputs(["memory://fpbucket/clips", "memory://fpbucket/clips/x.mp4"])
    assert scan.uris == ["memory://fpbucket/clips/x.mp4"]
    assert scan.fingerprints["memory://fpbucket/clips/x.mp4"].startswith("5:")


def test_glob_matching_nothing_among_other_inputs_is_reported(tmp_path, caplog):
    clip = _touch(tmp_path / "clip.mp4")
    (tmp_path / "empty").mkdir()
    pattern = str(tmp_path / "nothing" / "*.mp4")
    with caplog.at_level(logging.WARNING, logger="dflray.io.storage"):
        assert expand_inputs([clip, pattern]) == [clip]
    assert any(pattern in r.getMessage() and "matches no file" in r.getMessage() for r in caplog.records)

    from dflray.io.storage import scan_inputs

    scan = scan_inputs([clip, pattern, str(tmp_path / "empty")])
    assert scan.uris == [clip]
    assert [(p.input, p.type, p.video) for p in scan.problems] == [
        (pattern, "NoMatch", False), (str(tmp_path / "empty"), "NoMatch", False)]
    assert "no video files" in scan.problems[1].message


def test_http_input_that_refuses_connections_is_a_problem_that_says_why(tmp_path):
    clip = _touch(tmp_path / "clip.mp4")
    url = f"http://127.0.0.1:{closed_port()}/x.mp4"
    assert expand_inputs([url, clip]) == [clip]  # was: aiohttp's ClientConnectorError ended the call

    from dflray.io.storage import scan_inputs

    scan = scan_inputs([url, clip])
    (p,) = scan.problems
    assert (p.input, p.video) == (url, True) and scan.uris == [clip]
    assert "connection refused" in p.message and "\n" not in p.message and p.message.startswith(url)


def test_http_status_is_named(tmp_path):
    import http.server
    import threading

    from dflray.io.storage import describe_error, fs_and_path

    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(403)
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        fs, path = fs_and_path(f"http://127.0.0.1:{srv.server_address[1]}/x.mp4")
        with pytest.raises(Exception) as e:
            fs.open(path, "rb").read(10)
        assert "HTTP 403" in describe_error(e.value)
    finally:
        srv.shutdown()


_SCAN = """
import json, sys
from dflray.io.storage import scan_inputs
s = scan_inputs(sys.argv[1:])
print(json.dumps({"uris": s.uris, "problems": [[p.input, p.type, p.message] for p in s.problems]}))
"""


@pytest.mark.parametrize("case", ["no-credentials", "endpoint-unreachable"])
def test_s3_input_that_cannot_be_listed_is_a_one_line_problem(tmp_path, case):
    pytest.importorskip("s3fs")
    clip = _touch(tmp_path / "clip.mp4")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_DEFAULT_REGION="us-east-1",
               AWS_MAX_ATTEMPTS="1")
    if case == "endpoint-unreachable":
        env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y",
                   AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed_port()}")
    inputs = ["s3://bucket/x.mp4", "s3://bucket/raw/", clip]
    r = subprocess.run([sys.executable, "-c", _SCAN, *inputs], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["uris"] == [clip]
    want = "no credentials for s3" if case == "no-credentials" else "endpoint unreachable"
    assert [p[0] for p in got["problems"]] == inputs[:2]
    for _, _, message in got["problems"]:
        assert want in message and "\n" not in message and len(message) < 400, message

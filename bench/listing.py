"""Input-listing benchmark: an object-store prefix of 100,000 video keys, streamed vs s3fs's ``find``.

A real S3 server (moto) runs in a child process on 127.0.0.1, its bucket filled directly in moto's
backend (100,000 PUT requests would take many minutes): ``--keys`` video keys under ``s3://lake/raw/``
in 100 sub-folders. Then, each in a fresh process, the listing of ``s3://lake/raw/`` with its
fingerprints (size and ETag per video):

- *streamed*: ``dflray.io.storage.scan_inputs``, as every job lists its inputs today: one flat,
  paginated ListObjectsV2 listing read a page (1,000 keys) at a time, each entry cut to the size and
  ETag, nothing put in s3fs's listings cache;
- *s3fs find*: what ``scan_inputs`` did before: ``fs.find(prefix, detail=True)`` (every entry whole, in
  a dict, and in s3fs's listings cache for the life of the process), then a sorted list of the video
  entries and the URI -> fingerprint dict built from it.

Printed per way: wall time, peak Python allocations during the listing (``tracemalloc``: what the
listing itself holds at its peak, the S3 client's buffers included), memory still held afterwards
(the result and any cache), and the process's peak RSS. Both return the same URIs (checked and
printed).

This is a benchmark, not a test: nothing is asserted. ``python bench/listing.py --help``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BUCKET, PREFIX = "lake", "raw"


def serve(keys: int) -> None:
    """Child: a moto S3 server with ``keys`` video keys; prints its endpoint, then waits for stdin to close."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(BUCKET, "us-east-1")
    for i in range(keys):
        backend.put_object(BUCKET, f"{PREFIX}/part{i % 100:02d}/clip{i:06d}.mp4", b"%06d" % i)
    backend.put_object(BUCKET, f"{PREFIX}/README.txt", b"not a video")
    host, port = server.get_host_and_port()
    print(json.dumps({"endpoint": f"http://{host}:{port}"}), flush=True)
    sys.stdin.read()
    server.stop()


def measure(way: str) -> None:
    """Child: lists the prefix one way; prints its figures as JSON."""
    import s3fs  # noqa: F401  (imported before the clock: both ways need it)

    from dflray.io.storage import fingerprint, fs_and_path, normalize_uri, scan_inputs

    uri = f"s3://{BUCKET}/{PREFIX}/"
    fs, path = fs_and_path(uri)
    fs.ls(BUCKET)  # the client and its connection exist before the clock
    fs.invalidate_cache()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    if way == "streamed":
        scan = scan_inputs([uri])
        fingerprints = scan.fingerprints
    else:
        found = fs.find(path, detail=True)
        files = [(f"s3://{p}", i) for p, i in sorted(found.items()) if p.endswith(".mp4")]
        fingerprints = {normalize_uri(u): fingerprint(u, i) for u, i in files}
        del found, files
    seconds = time.perf_counter() - t0
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"seconds": seconds, "peak": peak - base, "held": held - base, "videos": len(fingerprints),
                      "cached": sum(len(v) for v in fs.dircache.values()),
                      "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "digest": hashlib.sha256(json.dumps(sorted(fingerprints.items())).encode()).hexdigest()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=100_000, help="video keys under the prefix (default 100,000)")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--way", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        return serve(args.serve)
    if args.way:
        return measure(args.way)

    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(args.keys)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    while not line.startswith("{"):  # moto says it starts a thread first
        line = server.stdout.readline()
    endpoint = json.loads(line)["endpoint"]
    print(f"moto S3 server at {endpoint}: {args.keys:,} video keys under s3://{BUCKET}/{PREFIX}/ "
          f"(100 folders), ready in {time.perf_counter() - t0:.0f} s", flush=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    rows = {}
    try:
        for way in ("streamed", "s3fs find"):
            out = subprocess.run([sys.executable, __file__, "--way", way], env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{way} failed:\n{out.stderr[-3000:]}")
            rows[way] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
    print(f"\n  {'way':<10} {'videos':>8} {'seconds':>8} {'peak during':>12} {'held after':>11} "
          f"{'cached keys':>12} {'peak RSS':>9}")
    for way, r in rows.items():
        print(f"  {way:<10} {r['videos']:>8,} {r['seconds']:>8.1f} {mib(r['peak']):>12} {mib(r['held']):>11} "
              f"{r['cached']:>12,} {mib(r['rss']):>9}")
    a, b = rows["streamed"], rows["s3fs find"]
    same = a["digest"] == b["digest"]
    print(f"\n  same URIs and fingerprints: {'yes' if same else 'NO'}; streamed / find: peak "
          f"{a['peak'] / b['peak']:.2f}x, held {a['held'] / max(1, b['held']):.2f}x, time {a['seconds'] / b['seconds']:.2f}x")


if __name__ == "__main__":
    main()

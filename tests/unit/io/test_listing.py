"""Listing an object-store prefix of thousands of keys: streamed a page at a time, nothing cached.

A real S3 server (moto) on 127.0.0.1; 2,100 video keys make three ListObjectsV2 pages.
"""


import pytest

from dflray.io.storage import fingerprint, scan_inputs
from tests.net import local_s3

N = 2100


@pytest.fixture(scope="module")
def s3():
    with local_s3():
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("lake")
        keys = {f"lake/raw/p{i % 7}/clip{i:05d}.mp4": b"v%d" % i for i in range(N)}
        fs.pipe({**keys, "lake/raw/notes/readme.txt": b"x", "lake/raw/empty/": b"", "lake/rawx/other.mp4": b"x"})
        yield sorted(f"s3://{k}" for k in keys)


def test_a_prefix_of_thousands_of_keys_is_listed_whole_and_kept_out_of_the_listing_cache(s3):
    from dflray.io.storage import fs_and_path

    fs, _ = fs_and_path("s3://lake/raw/")
    fs.invalidate_cache()
    scan = scan_inputs(["s3://lake/raw/"])
    assert not scan.problems
    assert sorted(scan.uris) == s3  # every page, not the first 1,000; not rawx/, not the .txt
    assert not fs.dircache  # s3fs's find would keep every key of the prefix here, for the process's life
    for uri in (s3[0], s3[1234], s3[-1]):  # the listing's size and ETag are those a HEAD request gives
        size = len(b"v%d" % int(uri[-9:-4]))
        assert scan.fingerprints[uri] == fingerprint(uri)
        assert scan.fingerprints[uri].startswith(f"{size}:") and len(scan.fingerprints[uri]) > len(f"{size}:") + 30


def test_object_store_inputs_keep_their_meaning(s3):
    scan = scan_inputs(["s3://lake/raw/notes/", "s3://lake/raw/p3/clip00003.mp4", "s3://lake/raw/p3/"])
    assert [p.message for p in scan.problems] == ["s3://lake/raw/notes/: holds no video files"]
    assert scan.uris[0] == "s3://lake/raw/p3/clip00003.mp4" and len(scan.uris) == N // 7
    missing = scan_inputs(["s3://lake/none/clip.mp4"], fingerprints=False)  # kept: the probe reports it
    assert (missing.uris, missing.problems) == (["s3://lake/none/clip.mp4"], [])

"""Input expansion and atomic writes on fsspec URLs (local and memory://)."""

import fsspec

from dflray.io.storage import atomic_write, expand_inputs, list_files


def _touch(p, data=b"x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return str(p)


def test_file_folder_glob_manifest(tmp_path):
    a = _touch(tmp_path / "v" / "a.mp4")
    b = _touch(tmp_path / "v" / "sub" / "b.MOV")
    _touch(tmp_path / "v" / "notes.md")
    c = _touch(tmp_path / "w" / "c.mkv")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# comment\n\n{c}\nw/c.mkv\nmissing.mp4\n")
    assert expand_inputs([str(tmp_path / "v")]) == [a, b]
    assert expand_inputs([str(tmp_path / "v" / "*.mp4")]) == [a]
    got = expand_inputs([str(manifest), a])
    # the relative entry resolves against the manifest's folder and equals c, so it appears once
    assert got == [c, str(tmp_path / "missing.mp4"), a]
    # a missing path is kept, so the job reports it as an error row
    assert expand_inputs(["/no/such/file.mp4"]) == ["/no/such/file.mp4"]
    # de-duplicated, order kept
    assert expand_inputs([a, a, str(tmp_path / "v" / "a.mp4")]) == [a]


def test_memory_filesystem_urls():
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/clips/x.mp4", b"1")
    fs.pipe("/bucket/clips/y.webm", b"2")
    got = expand_inputs(["memory://bucket/clips"])
    assert got == ["memory://bucket/clips/x.mp4", "memory://bucket/clips/y.webm"]
    with atomic_write("memory://bucket/out/t.bin") as f:
        f.write(b"hello")
    assert list_files("memory://bucket/out") == ["memory://bucket/out/t.bin"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "o" / "t.bin"
    try:
        with atomic_write(str(target)) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert not target.exists() and list((tmp_path / "o").iterdir()) == []

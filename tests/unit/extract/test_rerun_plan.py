"""What a rerun does with each input (issue 15, defect 3): a committed video is skipped only while its file is
the one extracted; inputs that failed before being read are tried again; a video's latest record wins."""

from dflray.extract.pipeline import _plan
from dflray.faceset import faceset_recover, read_videos, video_id, write_table
from dflray.faceset.commit import Done
from dflray.io.storage import InputProblem, Inputs


def _scan(fps: dict, problems=()):
    return Inputs(uris=list(fps), fingerprints=dict(fps), problems=list(problems))


def test_rerun_plan():
    done = {
        video_id("/d/same.mp4"): Done("ok", 10, "5:1"),
        video_id("/d/changed.mp4"): Done("ok", 10, "5:1"),
        video_id("/d/changed_noface.mp4"): Done("no_faces", 0, "5:1"),
        video_id("/d/old_record.mp4"): Done("ok", 10, None),  # written before fingerprints
        video_id("/d/was_missing.mp4"): Done("error", 0, None),
        video_id("/d/broken.mp4"): Done("error", 0, "9:1"),
        video_id("s3://b/done.mp4"): Done("ok", 3, "7:e"),
    }
    scan = _scan({"/d/same.mp4": "5:1", "/d/changed.mp4": "6:2", "/d/changed_noface.mp4": "6:2",
                  "/d/old_record.mp4": "5:1", "/d/was_missing.mp4": "5:1", "/d/broken.mp4": "9:1",
                  "/d/new.mp4": "1:1"},
                 [InputProblem("s3://b/x.mp4", "NoCredentialsError", "s3://b/x.mp4: no credentials for s3", True),
                  InputProblem("s3://b/done.mp4", "EndpointConnectionError", "s3://b/done.mp4: endpoint", True),
                  InputProblem("/d/*.mkv", "NoMatch", "/d/*.mkv: matches no file", False)])
    todo, failed, notes, skipped = _plan(scan, done)
    assert todo == ["/d/changed_noface.mp4", "/d/was_missing.mp4", "/d/new.mp4"]
    assert skipped == 3  # same, old_record, broken (its file did not change)
    assert [p.input for p in failed] == ["s3://b/x.mp4"]
    assert [(n["uri"], n["stage"], n["type"]) for n in notes] == [
        ("/d/changed.mp4", "input", "Changed"), ("s3://b/done.mp4", "input", "EndpointConnectionError"),
        ("/d/*.mkv", "input", "NoMatch")]
    assert "changed since it was extracted" in notes[0]["message"] and "new --out" in notes[0]["message"]


def test_latest_record_of_a_video_wins(tmp_path):
    out = str(tmp_path / "fs")
    vid = video_id("/d/a.mp4")
    write_table("videos", [{"video_id": vid, "uri": "/d/a.mp4", "status": "error", "run_id": "20260101000000aaaaaaaa"},
                           {"video_id": "b", "uri": "/d/b.mp4", "status": "ok", "faces": 2,
                            "run_id": "20260101000000aaaaaaaa"}],
                f"{out}/videos/20260101000000aaaaaaaa.parquet")
    write_table("videos", [{"video_id": vid, "uri": "/d/a.mp4", "status": "ok", "faces": 4, "fingerprint": "1:2",
                            "run_id": "20260102000000bbbbbbbb"}], f"{out}/videos/20260102000000bbbbbbbb.parquet")
    rows = read_videos(out).to_pylist()
    assert [(r["video_id"], r["status"]) for r in rows] == [("b", "ok"), (vid, "ok")]
    assert faceset_recover(out) == {"b": Done("ok", 2, None), vid: Done("ok", 4, "1:2")}


def test_run_ids_sort_in_start_order_within_a_second():
    from dflray.faceset import new_run_id

    ids = [new_run_id() for _ in range(50)]  # a quick rerun starts within the same second as the last
    assert ids == sorted(ids) and len(set(ids)) == 50

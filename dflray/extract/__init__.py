"""The extraction stage: videos → Parquet faceset on Ray Data."""

from dflray.faceset import read_errors, read_faces, read_videos
from dflray.extract.pipeline import ExtractSummary, run_extract, video_id

__all__ = ["ExtractSummary", "run_extract", "video_id", "read_faces", "read_videos", "read_errors"]

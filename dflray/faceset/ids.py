"""Ids shared by every stage: a video's id is a hash of its URI."""

from __future__ import annotations

import hashlib

__all__ = ["video_id"]


def video_id(uri: str) -> str:
    """Stable id of a video: a hash of its URI (the same input always maps to the same id).

    Example:
        >>> video_id("s3://bucket/clips/a.mp4") == video_id("s3://bucket/clips/a.mp4")
        True
        >>> len(video_id("a.mp4"))
        16
    """
    return hashlib.sha1(uri.encode()).hexdigest()[:16]

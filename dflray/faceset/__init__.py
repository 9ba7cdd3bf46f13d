"""Facesets, the shared layer every stage reads: committed ``faces``, ``videos`` and ``errors`` tables.

Knows no stage and needs no Ray, so a plain script (``bench/gpu.py``) reads facesets with it too.
"""

from dflray.faceset.read import committed_face_files, face_holders, read_errors, read_faces, read_videos

__all__ = ["committed_face_files", "face_holders", "read_errors", "read_faces", "read_videos"]

"""The extraction stage: videos → Parquet faceset on Ray Data (``run_extract``); facesets are read with
``dflray.faceset``."""

from dflray.extract.pipeline import ExtractSummary, run_extract

__all__ = ["ExtractSummary", "run_extract"]

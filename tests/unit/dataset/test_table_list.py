"""``TableList`` (the plan's rows) and ``QualityDocs`` (the quality documents): per-video state the dataset
job's driver keeps as Arrow tables, read as dicts."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from dflray.dataset.stages.base import TableList
from dflray.dataset.stages.quality import QualityDocs


def test_rows_by_position_and_in_order():
    n = 2500  # more than one batch of the iteration (1,024 rows)
    t = pa.concat_tables([pa.table({"id": [f"v{i}" for i in range(1000)], "x": list(range(1000))}),
                          pa.table({"id": [f"v{i}" for i in range(1000, n)], "x": list(range(1000, n))})])
    rows = TableList(t)
    assert len(rows) == n
    assert [r["x"] for r in rows] == list(range(n))
    assert list(rows)[1024] == {"id": "v1024", "x": 1024}
    assert rows[1500] == {"id": "v1500", "x": 1500} and rows[-1] == {"id": "v2499", "x": 2499}
    assert rows[2:4] == [{"id": "v2", "x": 2}, {"id": "v3", "x": 3}]
    with pytest.raises(IndexError):
        rows[n]
    with pytest.raises(IndexError):
        rows[-n - 1]


def test_quality_docs_read_back(tmp_path):
    docs = [{"id": "a", "status": "ok", "metrics": {"swap_success": 1.0, "flicker": None}, "note": ""},
            {"id": "b", "status": "ok", "metrics": {"swap_success": None}, "note": "not measured: ValueError: x"}]
    for d in docs:
        (tmp_path / f"{d['id']}.json").write_text(json.dumps(d))
    (tmp_path / "other.txt").write_text("not a document")
    q = QualityDocs.read(str(tmp_path))
    assert len(q) == 2 and sorted(q) == ["a", "b"]
    assert q["a"] == {"id": "a", "metrics": {"swap_success": 1.0, "flicker": None}, "note": ""}
    assert q.get("b")["note"] == "not measured: ValueError: x" and q["b"]["metrics"] == {"swap_success": None}
    assert q.get("c", {}) == {}
    assert len(QualityDocs.read(str(tmp_path / "none"))) == 0

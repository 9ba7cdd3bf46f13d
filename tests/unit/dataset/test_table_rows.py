"""``TableRows``: per-item state the dataset job's driver keeps as an Arrow table, read as dicts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dflray.dataset.stages.base import TableRows


def test_rows_by_key_read_as_dicts():
    t = pa.concat_tables([pa.table({"id": ["a", "b"], "x": [1, 2]}), pa.table({"id": ["c"], "x": [3]})])
    rows = TableRows(t, "id")
    assert len(rows) == 3 and list(rows) == ["a", "b", "c"]
    assert rows["c"] == {"id": "c", "x": 3}  # from the table's second chunk
    assert rows.get("b") == {"id": "b", "x": 2}
    assert rows.get("z") is None and "z" not in rows and "a" in rows
    assert {k: v["x"] for k, v in rows.items()} == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(KeyError, match="z"):
        rows["z"]


def test_empty_table():
    rows = TableRows(pa.table({"id": pa.array([], pa.string())}), "id")
    assert len(rows) == 0 and rows.get("a") is None

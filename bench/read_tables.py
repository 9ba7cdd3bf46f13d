"""Memory of reading many small Parquet files into one table: one table held per file vs
``schema.read_table`` (which merges small files' tables as it reads them), side by side in one run.

The dataset job's driver reads one small file per task: a merge record per fake (``merged``), a published
row per video version (``dataset``). Each size and way runs in a fresh process; the figure is that
process's RSS after the read less its RSS before (``psutil``; after one warm-up read, since Parquet's reader
loads its machinery on the first read), and the table's own bytes beside it.

    .venv/bin/python bench/read_tables.py              # ~1.5 min on 2 cores
    .venv/bin/python bench/read_tables.py --sizes 200,1000,5000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(name: str, n: int, folder: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dflray.io import schema

    sch = schema.TABLES[name]

    def value(f, i):
        if f.name == "schema_version":
            return schema.SCHEMA_VERSION
        if pa.types.is_string(f.type):
            return f"{f.name}-{i:06d}-" + "x" * 20
        if pa.types.is_integer(f.type):
            return i
        if pa.types.is_floating(f.type):
            return 0.5
        return True if pa.types.is_boolean(f.type) else None

    for i in range(n):  # one-row files, as one task writes them
        pq.write_table(schema.table_from_rows(name, [{f.name: value(f, i) for f in sch}]),
                       os.path.join(folder, f"{i:06d}.parquet"))


def _child(name: str, folder: str, way: str) -> None:
    import glob

    import psutil
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dflray.io import schema

    files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    proc = psutil.Process()
    schema.read_table(name, files[:1])  # warm-up: Parquet's reader loads its machinery on the first read
    before = proc.memory_info().rss
    if way == "apart":  # one table held per file, then concatenated (read_table before the fix)
        t = pa.concat_tables([schema.conform(name, pq.read_table(f)) for f in files])
    else:
        t = schema.read_table(name, files)
    print(json.dumps({"mib": (proc.memory_info().rss - before) / 2**20, "data_mib": t.nbytes / 2**20,
                      "rows": t.num_rows, "chunks": t.column(0).num_chunks}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200,1000,2000", help="files per read, comma-separated")
    ap.add_argument("--child", nargs=3, metavar=("NAME", "FOLDER", "WAY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(*args.child)
    sizes = [int(s) for s in args.sizes.split(",")]
    print("memory a process gains reading N one-row Parquet files into one table (MiB of RSS; data = the table's bytes)")
    print(f"{'table':8} {'files':>6} {'apart MiB':>10} {'read_table MiB':>15} {'data MiB':>9} {'chunks apart/read_table':>24}")
    for name in ("merged", "dataset"):
        for n in sizes:
            with tempfile.TemporaryDirectory() as folder:
                _write(name, n, folder)
                res = {}
                for way in ("apart", "read_table"):
                    out = subprocess.run([sys.executable, __file__, "--child", name, folder, way], check=True,
                                         capture_output=True, text=True).stdout
                    res[way] = json.loads(out.strip().splitlines()[-1])
            a, r = res["apart"], res["read_table"]
            print(f"{name:8} {n:>6} {a['mib']:>10.1f} {r['mib']:>15.1f} {r['data_mib']:>9.2f} "
                  f"{a['chunks']:>12}/{r['chunks']}")


if __name__ == "__main__":
    main()

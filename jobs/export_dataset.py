"""Ray job: `dflray export-dataset` on the cluster it is submitted to.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/export_dataset.py s3://bucket/datasets/v1 --format deepfakebench --out s3://bucket/dfb/v1

Arguments are those of `dflray export-dataset` (see `python jobs/export_dataset.py --help`); exits non-zero on failure.
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("export-dataset"))

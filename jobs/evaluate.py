"""Ray job: `dflray evaluate` on the cluster it is submitted to.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/evaluate.py s3://bucket/datasets/v1 epochs=5 use_gpu=true num_workers=2

Arguments are those of `dflray evaluate` (see `python jobs/evaluate.py --help`); exits non-zero on failure.
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("evaluate"))

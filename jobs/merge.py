"""Ray job: merge a trained model onto dst videos (`dflray merge`).

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/merge.py --model s3://bucket/runs/ab --dst s3://bucket/facesets/b \\
        --out s3://bucket/fakes/ab predict.num_gpus=1 mode=seamless-hist-match

Arguments are those of `dflray merge` (see `python jobs/merge.py --help`); exits non-zero on failure.
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("merge"))

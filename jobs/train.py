"""Ray job: train a DF/LIAE autoencoder with Ray Train (`dflray train`).

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/train.py --src s3://bucket/facesets/a --dst s3://bucket/facesets/b \\
        --out s3://bucket/runs/ab --arch liae-ud steps=20000 num_workers=4 use_gpu=true

Arguments are those of `dflray train` (see `python jobs/train.py --help`); exits non-zero on failure.
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("train"))

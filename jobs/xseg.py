"""Ray job: learned face segmentation (`dflray xseg train|apply`).

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/xseg.py train s3://bucket/facesets/a s3://bucket/facesets/b --out s3://bucket/xseg/v1 \\
        steps=20000 use_gpu=true
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/xseg.py apply s3://bucket/facesets/b --model s3://bucket/xseg/v1

Arguments are those of `dflray xseg` (see `python jobs/xseg.py train --help`); exits non-zero on failure.
A resubmitted `train` continues from its newest checkpoint; a resubmitted `apply` skips the faces files
that already carry the model's masks.
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("xseg"))

"""Ray job: extract faces from videos into a Parquet faceset (`dflray extract`).

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/extract.py s3://bucket/raw/ --out s3://bucket/facesets/a align.face_type=whole_face

Arguments are those of `dflray extract` (see `python jobs/extract.py --help`); exits non-zero on failure.
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("extract"))

"""Ray job: a plan of real videos → a labelled, measured, perturbed forgery dataset (`dflray generate`).

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/generate.py examples/dataset_plan.yaml --out s3://bucket/datasets/v1 --layout ffpp

Arguments are those of `dflray generate` (see `python jobs/generate.py --help`); exits non-zero on
failure. A resubmission with the same plan and --out finishes only what is missing.
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("generate"))

"""The stages of the dataset job (``dflray generate``), in the order ``run_generate`` runs them.

Each stage is resumable: a rerun after a crash or a kill does only what is missing.

- ``extract``: a faceset of every video (``WORK/faceset``, the extraction job).
- ``identities``: each video's dominant person; labels, else clustering of dlib embeddings.
- ``plan``: identity-disjoint splits and pairing → ``OUT/plan.parquet`` (kept: a rerun uses it).
- ``train``: the models the plan needs (``WORK/models/<key>/``), optionally from a shared base.
- ``merge``: every planned fake, losslessly (``WORK/fakes``), one ``MergeTask`` each.
- ``quality``: the metrics of every fake (``WORK/quality``), one ``QualityTask`` each.
- ``publish``: perturb and encode every video at each compression level into the layout
  (``WORK/published`` records), one ``PublishTask`` each.
- ``index``: ``index.parquet``, ``frames.parquet``, ``metadata.json`` and ``errors.parquet``.

``base`` holds what they share: ``GenerateSummary``, the ``Task`` base of the typed tasks and the actor
pool that runs them (``run_tasks``).
"""

from dflray.dataset.stages.base import GenerateSummary, Task, TaskResult, run_tasks
from dflray.dataset.stages.extract import extract_faceset, subset_faceset
from dflray.dataset.stages.identities import Identities, find_identities, video_embeddings
from dflray.dataset.stages.index import consolidate
from dflray.dataset.stages.merge import MergeTask, merge_fakes
from dflray.dataset.stages.plan import DatasetPlan, count_plan, model_key, plan_dataset, read_plan, write_plan
from dflray.dataset.stages.publish import PublishTask, dataset_rows, publish_videos
from dflray.dataset.stages.quality import QualityTask, measure_fakes
from dflray.dataset.stages.train import model_jobs, train_models

__all__ = ["DatasetPlan", "GenerateSummary", "Identities", "MergeTask", "PublishTask", "QualityTask", "Task",
           "TaskResult", "consolidate", "count_plan", "dataset_rows", "extract_faceset", "find_identities",
           "measure_fakes", "merge_fakes", "model_jobs", "model_key", "plan_dataset", "publish_videos", "read_plan",
           "run_tasks", "subset_faceset", "train_models", "video_embeddings", "write_plan"]

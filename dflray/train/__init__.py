"""The training stage: DF/LIAE autoencoders on Ray Train (DDP)."""

from dflray.train.checkpoint import latest_checkpoint, load_payload
from dflray.train.trainer import TrainSummary, run_train

__all__ = ["TrainSummary", "latest_checkpoint", "load_payload", "run_train"]

"""The training stage: DF/LIAE autoencoders on Ray Train (DDP) (``run_train``), around the Ray-free
``dflray.train.step.SwapTrainer``; checkpoints and exports are ``dflray.artifacts``."""

from dflray.train.trainer import TrainSummary, run_train

__all__ = ["TrainSummary", "run_train"]

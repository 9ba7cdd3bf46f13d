"""Model artefacts, the shared layer under training, merge and dataset generation: checkpoints, exported
swap models with their frozen contract, XSeg model files and model ids.

Knows no stage and needs no Ray.

Modules:
    checkpoint: training checkpoints (``model.pt`` + ``meta.json``), finding the latest.
    export: TorchScript/ONNX export of a checkpoint, ``ModelContract``, ``load_exported``,
        ``resolve_model`` (an export, or a checkpoint exported once and cached).
    xseg: XSeg model files (``save_xseg``, ``load_xseg``, ``resolve_xseg``, ``model_id``).
"""

from dflray.artifacts.checkpoint import latest_checkpoint, load_payload, read_meta, save_payload
from dflray.artifacts.export import ModelContract, export_model, load_exported, resolve_model
from dflray.artifacts.xseg import load_xseg, model_id, resolve_xseg, save_xseg

__all__ = [
    "ModelContract",
    "export_model",
    "latest_checkpoint",
    "load_exported",
    "load_payload",
    "load_xseg",
    "model_id",
    "read_meta",
    "resolve_model",
    "resolve_xseg",
    "save_payload",
    "save_xseg",
]

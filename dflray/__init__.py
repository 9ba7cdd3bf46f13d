"""dflray: DeepFaceLab's face-swap pipeline as a distributed Ray batch system for labelled
deepfake-detection datasets. Stages live in subpackages: ``dflray.extract`` (videos → faceset)."""

__version__ = "0.1.0"

"""Training: one Trainer for every family (``trainer.py``) and ``train``, the entry point the CLI and Python
share (``train.py``). The typed recipe of a run is ``TrainConfig``, which the run folder records
(``aediff.runs.training_config``)."""

from aediff.runs.training_config import TrainConfig

__all__ = ["TrainConfig"]

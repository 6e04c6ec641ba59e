"""Training: one Trainer for every family (``trainer.py``) and ``train``, the entry point the CLI and Python
share (``train.py``). The typed recipe of a run is ``TrainConfig`` (``config.py``)."""

from aediff.training.config import TrainConfig

__all__ = ["TrainConfig"]

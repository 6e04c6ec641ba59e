"""Training: one Trainer for every family (``trainer.py``: the loop; ``setup.py``: its checks, accelerator and
data plan; ``checkpoints.py``: the checkpoint and snapshot files; ``signals.py``: Ctrl-C and SIGTERM) and
``train``, the entry point the CLI and Python share (``train.py``). The typed recipe of a run is
``TrainConfig``, which the run folder records (``aediff.runs.training_config``)."""

from aediff.runs.training_config import TrainConfig

__all__ = ["TrainConfig"]

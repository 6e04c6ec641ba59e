"""aediff: the autoencoder family and diffusion models, side by side.

import aediff
aediff.train("vae", out="runs/vae", data="mnist5k", training={"max_minutes": 5})
run = aediff.load("runs/vae")            # rebuilt from the run folder alone (safetensors + JSON)
z = run.model.encode(x); x_hat = run.model.decode(z); samples = run.model.sample(16)
"""

from __future__ import annotations

from typing import Any

from aediff.errors import AediffError, ConfigError, DataError, RunError
from aediff.version import __version__


def __getattr__(name: str) -> Any:
    """``aediff.load`` and ``aediff.Run``, imported on first use: they pull in torch, which the command
    line's usage errors and --help do without (1.6 s -> 0.2 s). Importing ``aediff.export`` registers what
    ``load`` reads besides run folders (``hf://`` runs, diffusers folders): runs sits below export."""
    if name in ("load", "Run"):
        import aediff.export  # noqa: F401
        from aediff import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'aediff' has no attribute {name!r}")


def train(*args, **kwargs):
    """See ``aediff.training.train.train`` (imported lazily: it pulls in Accelerate). Importing ``aediff.export``
    lets the training load an autoencoder or judge given as ``hf://`` (see ``__getattr__``)."""
    import aediff.export  # noqa: F401
    from aediff.training.train import train as _train

    return _train(*args, **kwargs)


__all__ = ["AediffError", "ConfigError", "DataError", "Run", "RunError", "__version__", "load", "train"]

"""aediff: the autoencoder family and diffusion models, side by side.

    import aediff
    aediff.train("vae", out="runs/vae", data="mnist5k", training={"max_minutes": 5})
    model = aediff.load("runs/vae")          # rebuilt from the run folder alone (safetensors + JSON)
    z = model.encode(x); x_hat = model.decode(z); samples = model.sample(16)
"""

from aediff.errors import AediffError, ConfigError, DataError, RunError
from aediff.runs import load

__version__ = "0.1.0"


def train(*args, **kwargs):
    """See ``aediff.training.train`` (imported lazily: it pulls in Accelerate)."""
    from aediff.training import train as _train

    return _train(*args, **kwargs)


__all__ = ["AediffError", "ConfigError", "DataError", "RunError", "__version__", "load", "train"]

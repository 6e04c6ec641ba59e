"""Shared fixtures: tiny data and tiny models keep the suite fast on a 2-core CPU."""

from __future__ import annotations

import pytest
import torch

TINY = {"channels": (8, 16), "bottleneck_dim": 8}


@pytest.fixture(scope="session")
def digits_train():
    from aediff.data import load_dataset

    return load_dataset("digits", "train")


@pytest.fixture(scope="session")
def digits_test():
    from aediff.data import load_dataset

    return load_dataset("digits", "test")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

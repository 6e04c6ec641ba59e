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


@pytest.fixture
def losses_while_fitting():
    """Adam on one fixed batch; the k-th step re-seeds with k % noise_draws, so the loss's random draws
    repeat and early and late losses are comparable. Returns the list of losses."""

    def fit(model, images, steps, noise_draws, lr=3e-3):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        losses = []
        for step in range(steps):
            torch.manual_seed(step % noise_draws)
            loss, _ = model({"images": images})
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return fit

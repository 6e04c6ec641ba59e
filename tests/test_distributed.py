"""Two CPU processes (gloo, launched by `accelerate launch`) train exactly what one process trains with
the same global batch: the data is sharded, gradients are averaged, and every draw is seeded per rank."""

import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from aediff.training.train import train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    model = {"channels": (8, 16), "bottleneck_dim": 8}
    steps = 12
    train(
        "ae",
        tmp_path / "one",
        "digits",
        model=model,
        progress=False,
        # fp32 on both sides: bf16 autocast (the default where the CPU has it) rounds a convolution over 16
        # images differently from one over 32, which this test would read as a difference in the data or gradients
        training={
            "batch_size": 32,
            "max_steps": steps,
            "warmup_steps": 3,
            "tensorboard": False,
            "mixed_precision": "no",
        },
    )
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "aediff.cli",
        "train",
        "ae",
        "--data",
        "digits",
        "--out",
        str(tmp_path / "two"),
        "--max-steps",
        str(steps),
        "--batch-size",
        "32",
        "--set",
        "channels=8,16",
        "--bottleneck",
        "8",
        "--no-progress",
        "--mixed-precision",
        "no",
        "--train-set",
        "warmup_steps=3",
        "--train-set",
        "tensorboard=false",
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = (tmp_path / "two" / "training_state" / "state.json").read_text()
    assert '"world_size": 2' in state
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key].float(), two[key].float(), atol=1e-5), key
    # The runs really trained: weights moved away from their initial values.
    torch.manual_seed(0)
    from aediff.models import build_model

    init = build_model("ae", {"image_size": 8, **model}).state_dict()
    assert any(not torch.allclose(init[k].float(), one[k].float()) for k in init if k in one)

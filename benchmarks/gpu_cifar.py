"""CIFAR-10 at 32x32 on one GPU: aediff's default diffusion U-Net against diffusers' UNet2DModel from its
`train_unconditional` example, same GPU, same batch, bf16 autocast, with and without torch.compile; then FID
after the same minutes of training, in the features of a classifier trained here on CIFAR-10.

Prepared to run on a lent GPU in one go (device time is short):

    python benchmarks/gpu_cifar.py --data-dir /path/to/shared/data             # ~9 min on an H100-class GPU
    python benchmarks/gpu_cifar.py --device cpu --steps 3 --minutes 0.05 --judge-minutes 0.05 --samples 64 \
        --out /tmp/gpu_cifar                                                  # a smoke run on the CPU

Throughput: images/s of a full training step (loss, backward, AdamW, EMA for aediff) at batch --batch, median
over windows after warm-up (and after compilation, timed separately). FID: each network trains --minutes
with bf16 (compiled when faster; aediff by its trainer's `--compile`), then draws --samples with 20 network
evaluations (aediff's DPM-Solver++; diffusers' DPMSolverMultistepScheduler), scored against CIFAR-10's test
split. aediff trains through its own trainer; diffusers' network in a loop like its example's.
Writes benchmarks/results/gpu_cifar.json and .md.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import aediff
from aediff.config import update_config
from aediff.data import DataConfig
from aediff.evaluation import generation_score, sample_images
from aediff.evaluation.judges import judges_for
from aediff.models.registry import build_model, model_class
from aediff.runs.training_config import TrainConfig
from aediff.training.setup import speed_up
from aediff.training.train import fill_data_shape, train
from aediff.training.trainer import EMA
from results_files import machine, write_results


def train_unconditional_unet():
    """diffusers' examples/unconditional_image_generation network, at 32x32 RGB."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
    )  # fmt: skip


class Contender:
    """One network's training step on ``device``: ``step(x)`` with x [B, 3, 32, 32] in [-1, 1]."""

    def __init__(self, name: str, device: torch.device, compiled: bool, train_set):
        self.name, self.device = name, device
        torch.manual_seed(0)
        if name == "aediff":
            cls = model_class("diffusion")
            self.model = build_model("diffusion", update_config(fill_data_shape(cls.config_class(), train_set), {}))
            self.model.to(device)
            self.ema = EMA(self.model, 0.999)
            speed_up(self.model, TrainConfig(compile=compiled), device)  # the trainer's --compile
            forward = self.model
        else:
            from diffusers import DDPMScheduler

            self.model = train_unconditional_unet().to(device)
            self.scheduler = DDPMScheduler(1000)
            self.alphas = self.scheduler.alphas_cumprod.to(device)
            forward = self.model
        self.forward = torch.compile(forward) if compiled and name != "aediff" else forward
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.t = 0

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "aediff":
            return self.forward({"images": x})[0]
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (len(x),), device=x.device)
        a = self.alphas[t].sqrt()[:, None, None, None]
        noisy = a * x + (1 - a**2).sqrt() * noise
        return torch.nn.functional.mse_loss(self.forward(noisy, t).sample, noise)

    def step(self, x: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            loss = self.loss(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.name == "aediff":
            self.ema.update(self.model, self.t)
        self.t += 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(contender: Contender, batches: list[torch.Tensor], steps: int) -> dict:
    begun = time.perf_counter()
    for x in batches[:3]:  # warm-up, compilation included
        contender.step(x)
    sync(contender.device)
    warmup = time.perf_counter() - begun
    rates = []
    for _ in range(3):
        begun = time.perf_counter()
        for i in range(steps):
            contender.step(batches[i % len(batches)])
        sync(contender.device)
        rates.append(steps * len(batches[0]) / (time.perf_counter() - begun))
    return {"images_per_s": statistics.median(rates), "warmup_seconds": warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="where cifar10-jpeg.tar.gz (or its folder) lies")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="steps per throughput window (3 windows)")
    parser.add_argument("--minutes", type=float, default=2.0, help="training time per network for the FID")
    parser.add_argument("--judge-minutes", type=float, default=1.0, help="training time of the CIFAR classifier")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--runs", type=Path, default=Path("runs/gpu-cifar"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_cifar"))
    args = parser.parse_args()
    started, device = time.time(), torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    results = {"command": "python " + shlex.join(sys.argv), "machine": machine(gpu=gpu), "batch": args.batch}
    data = DataConfig(spec="cifar10", data_dir=args.data_dir)
    train_set, test = data.load("train"), data.load("test")
    g = torch.Generator().manual_seed(0)
    batches = [train_set.batch(torch.randperm(len(train_set), generator=g)[: args.batch])["images"].to(device)
               for _ in range(8)]  # fmt: skip
    results["throughput"] = {}
    for name in ("aediff", "diffusers"):
        for compiled in (False, True):
            key = f"{name}, bf16{', compiled' if compiled else ''}"
            results["throughput"][key] = throughput(Contender(name, device, compiled, train_set), batches, args.steps)
            print(key, results["throughput"][key], flush=True)
    results["fid"] = fid_after_minutes(args, data, train_set, test, device, results["throughput"])
    write_results(args.out, results, started, markdown)


def fid_after_minutes(args, data, train_set, test, device, speeds: dict) -> dict:
    """Each network trained --minutes (bf16; diffusers' compiled when faster), 20-NFE samples scored on the test
    split."""
    judge_run = args.runs / "judge"
    if not judge_run.exists():
        train("classifier", judge_run, data, training={"max_minutes": args.judge_minutes, "batch_size": 256},
              progress=False)  # fmt: skip
    judge = judges_for(aediff.load(judge_run).model.to(device))[0]
    reference = judge.reference_features(test)
    out = {}
    run = args.runs / "aediff"  # aediff's own trainer, bf16, with --compile when that was faster
    compiled = speeds["aediff, bf16, compiled"]["images_per_s"] > speeds["aediff, bf16"]["images_per_s"]
    recipe = {"max_minutes": args.minutes, "batch_size": args.batch, "mixed_precision": "bf16", "compile": compiled}
    train("diffusion", run, data, training=recipe, progress=False)
    images = sample_images(aediff.load(run).model.to(device), args.samples, seed=0)
    out["aediff"] = score(images, judge, test, reference) | {"compiled": compiled}
    compiled = speeds["diffusers, bf16, compiled"]["images_per_s"] > speeds["diffusers, bf16"]["images_per_s"]
    contender, g = Contender("diffusers", device, compiled, train_set), torch.Generator().manual_seed(1)
    begun, steps = time.perf_counter(), 0
    while time.perf_counter() - begun < args.minutes * 60:
        idx = torch.randint(0, len(train_set), (args.batch,), generator=g)
        contender.step(train_set.batch(idx)["images"].to(device))
        steps += 1
    out["diffusers"] = score(sample_diffusers(contender, args.samples), judge, test, reference)
    out["diffusers"] |= {"compiled": compiled, "steps": steps}
    return out


@torch.no_grad()
def sample_diffusers(contender: Contender, n: int) -> torch.Tensor:
    from diffusers import DPMSolverMultistepScheduler

    solver = DPMSolverMultistepScheduler.from_config(contender.scheduler.config)
    solver.set_timesteps(20)
    chunks = []
    for i in range(0, n, 250):
        x = torch.randn(min(250, n - i), 3, 32, 32, generator=torch.Generator().manual_seed(i)).to(contender.device)
        for t in solver.timesteps:
            with torch.autocast(contender.device.type, dtype=torch.bfloat16):
                eps = contender.model(x, t).sample.float()
            x = solver.step(eps, t, x).prev_sample
        chunks.append(x.clamp(-1, 1).cpu())
    return torch.cat(chunks)


def score(images, judge, test, reference) -> dict:
    s = generation_score(images, judge.features, test, feature_extractor=judge.name, reference_name="cifar10:test",
                         reference_features=reference)  # fmt: skip
    return {"fid": s.fid, "fid_se": s.fid_se}


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"`{r['command']}` on {m['gpu']} (CPU {m['cpu']}), torch {m['torch']}, batch {r['batch']}.", "",
             "| network | img/s | warm-up s |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {k} | {v['images_per_s']:.0f} | {v['warmup_seconds']:.1f} |" for k, v in r["throughput"].items()]
    lines += ["", "| network | FID (+- 95%) |", "|---|---|"]
    lines += [f"| {k} | {v['fid']:.2f} +- {1.96 * (v['fid_se'] or 0):.2f} |" for k, v in r["fid"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

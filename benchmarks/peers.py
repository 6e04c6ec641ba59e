"""Diffusion on mnist5k at an equal CPU budget, fairly: aediff against diffusers and denoising-diffusion-pytorch,
each in its own documented recipe (a), in the best of a small lr / EMA sweep (b), and the peer's network inside
aediff's recipe (c).

Protocol (every contender alike):
- Data: mnist5k's training split (4,000 images) is cut once, by a fixed seed, into 3,500 training and 500
  validation images. Every variant trains on the 3,500. Choices are made on the validation split (FID of 500
  samples against the 500 validation images); mnist5k's test split (1,000 images) is only used for the final
  table, after every choice, and every variant's test score is reported, chosen or not.
- Budget: 10 minutes of this machine. Each variant's training throughput is first measured on idle cores
  (phase 1, all variants one after the other in one process: the same machine state); the budget is that
  throughput x 10 minutes, in optimizer steps of batch 64. Training then runs for exactly that many steps, so
  the result does not depend on what else the machine did later, and schedules that anneal over the run
  (aediff's cosine LR, diffusers' cosine with warm-up) know the run's length.
- Sampling: 20 network evaluations per image for everyone, each library's own 20-step solver: aediff's
  DPM-Solver++(2M), diffusers' DPMSolverMultistepScheduler, denoising-diffusion-pytorch's DDIM (its only fast
  sampler). 1,000 samples per row (seed 0) for test, 500 (seed 1) for validation.
- Judge: the classifier `aediff train classifier --data mnist5k --out runs/clf --epochs 15`, trained on
  mnist5k's training split (it never sees the test split).
  FID in its 128-d penultimate features with a bootstrap interval; the paired difference to aediff's default;
  the share of samples it reads with probability >= 0.9, and how many of the 10 classes appear.
- Controls: real images (1,000 training images scored like samples: the floor), and aediff's untrained
  network (must lose to everything).

Variants (the tuning budget: aediff 2 runs; diffusers 2 + its two recipes; denoising-diffusion-pytorch 2):
- aediff: in fp32 (its default until this benchmark, lr 1e-3) and at lr 3e-3, the tuning variants; and with
  bf16 autocast, a speed variant where the CPU has avx512_bf16 or AMX (its default since: "auto").
- diffusers, the Hugging Face course's MNIST UNet2DModel ((32, 64, 64), 2 layers per block, attention in the
  two lower blocks) in (a1) the course's recipe (AdamW 1e-3 constant, no EMA, no clipping, cosine betas,
  eps) and (a2) the `train_unconditional` example's recipe (AdamW 1e-4, betas (0.95, 0.999), weight decay
  1e-6, 500 warm-up steps then cosine, clipping at 1, EMAModel with warm-up inv_gamma 1, power 3/4, max
  0.9999, linear betas, eps); (b) the latter at lr 1e-3 with aediff's EMA (0.999, warm-up (1+t)/(10+t)).
- denoising-diffusion-pytorch 2.3.4: Unet(dim=32, dim_mults=(1, 2, 4), channels=1) and GaussianDiffusion's
  defaults (v objective, sigmoid schedule), in (a) its Trainer's recipe (Adam 1e-4, betas (0.9, 0.99),
  clipping at 1, ema_pytorch EMA beta 0.995 every 10 steps after 100) and (b) lr 1e-3 with aediff's EMA.
- (c) the course's UNet2DModel inside aediff's default recipe (`--network diffusers-unet2d`, 2 blocks per
  stage, attention at 14 and 7), and denoising-diffusion-pytorch's Unet(dim=32, dim_mults=(1, 2, 4)) inside it
  (`--network ddpm-pytorch-unet --widths 32,64,128`), both in fp32 like the peers.

    pip install --no-deps denoising-diffusion-pytorch==2.3.4 ema-pytorch einops   # the second peer (no torchvision)
    aediff train classifier --data mnist5k --out runs/clf --epochs 15      # the judge, once
    python benchmarks/peers.py                                              # the documented run (~2 h)
    python benchmarks/peers.py --minutes 0.1 --samples 100 --val-samples 50 --runs /tmp/peers \
        --out /tmp/peers/result                                             # a smoke run (~6 min)

A variant added after the documented run gets its budget with `--only NEW --reuse-budgets --anchor OLD`: the
new variant's and the anchor's throughputs are measured one after the other in this process, and the new
budget is the anchor's recorded budget times their ratio (so a different machine state cancels out).

Writes benchmarks/results/peers.json and .md (rewritten after every variant).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import shutil
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import aediff
from aediff.data import DataConfig, load_dataset
from aediff.device import cpu_has_bf16
from aediff.environment import package_version
from aediff.evaluation import generation_score, sample_images
from aediff.evaluation.judges import judges_for
from aediff.metrics.stats import difference_of_draws
from aediff.runs import median_images_per_second
from aediff.training.train import train
from aediff.training.trainer import EMA as AediffEMA
from results_files import machine, write_results

BATCH = 64
NFE = 20
SPLIT_SEED = 0
VALIDATION = 500
# aediff's default since this benchmark (mixed_precision "auto" = bf16 on this CPU); the rows in fp32 are the
# default before it, its lr sweep, and the adapter row (run in fp32, like the peers)
DEFAULT = "aediff, bf16 autocast (the default)"
COURSE_UNET = {"channels": [32, 64, 64], "blocks_per_stage": 2, "attention_resolutions": [14, 7]}


@dataclasses.dataclass
class Variant:
    name: str
    library: str  # "aediff", "diffusers", "ddpm-pytorch"
    role: str  # "default", "tuning", "speed", "(a) recipe", "(b) sweep", "(c) network in aediff's recipe"
    settings: dict  # what the variant changes, as recorded


def variants() -> list[Variant]:
    fp32 = {"mixed_precision": "no"}
    out = [
        Variant("aediff, fp32", "aediff", "tuning", {"training": fp32}),
        Variant("aediff, fp32, lr 3e-3", "aediff", "tuning", {"training": {**fp32, "lr": 3e-3}}),
    ]
    if cpu_has_bf16():
        out.append(Variant(DEFAULT, "aediff", "tuning, speed", {"training": {"mixed_precision": "bf16"}}))
    out += [
        Variant("aediff recipe, diffusers' course UNet2DModel", "aediff", "(c) network in aediff's recipe",
                {"training": fp32, "model": {"architecture": "diffusers-unet2d", **COURSE_UNET}}),
        Variant("aediff recipe, ddpm-pytorch's Unet", "aediff", "(c) network in aediff's recipe",
                {"training": fp32, "model": {"architecture": "ddpm-pytorch-unet", "channels": [32, 64, 128]}}),
        Variant("diffusers, HF course recipe", "diffusers", "(a) recipe", {"recipe": "course"}),
        Variant("diffusers, train_unconditional recipe", "diffusers", "(a) recipe", {"recipe": "train_unconditional"}),
        Variant("diffusers, train_unconditional, lr 1e-3, aediff's EMA", "diffusers", "(b) sweep",
                {"recipe": "train_unconditional", "lr": 1e-3, "ema": "aediff"}),
        Variant("ddpm-pytorch, Trainer recipe", "ddpm-pytorch", "(a) recipe", {}),
        Variant("ddpm-pytorch, lr 1e-3, aediff's EMA", "ddpm-pytorch", "(b) sweep", {"lr": 1e-3, "ema": "aediff"}),
    ]  # fmt: skip
    return out


# --- the peers' training loops --------------------------------------------------------------------------------


class PeerTrainee:
    """A peer's network, optimizer and EMA: ``step(x)`` trains on a batch in [-1, 1]; ``sample(n, seed)`` draws
    n images in [-1, 1] with NFE network evaluations each, from the EMA when there is one."""

    parameters: int

    def step(self, x: torch.Tensor) -> float:
        raise NotImplementedError

    def sample(self, n: int, seed: int) -> torch.Tensor:
        raise NotImplementedError


def course_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip


class DiffusersTrainee(PeerTrainee):
    def __init__(self, settings: dict, total_steps: int):
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        torch.manual_seed(0)
        self.net = course_unet()
        self.parameters = sum(p.numel() for p in self.net.parameters())
        course = settings["recipe"] == "course"
        self.scheduler = DDPMScheduler(1000, beta_schedule="squaredcos_cap_v2" if course else "linear")
        lr = settings.get("lr", 1e-3 if course else 1e-4)
        if course:
            self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr)
            self.lr_schedule = None
        else:
            self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
            self.lr_schedule = get_scheduler("cosine", self.opt, num_warmup_steps=500, num_training_steps=total_steps)
        self.clip = None if course else 1.0
        ema = settings.get("ema", None if course else "recipe")
        self.ema = None
        if ema == "recipe":
            self.ema = EMAModel(self.net.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
        elif ema == "aediff":
            self.ema = AediffEMA(self.net, 0.999)
        self.t = 0

    def step(self, x):
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (len(x),))
        loss = torch.nn.functional.mse_loss(self.net(self.scheduler.add_noise(x, noise, t), t).sample, noise)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip)
        self.opt.step()
        if self.lr_schedule:
            self.lr_schedule.step()
        self.opt.zero_grad(set_to_none=True)
        if isinstance(self.ema, AediffEMA):
            self.ema.update(self.net, self.t)
        elif self.ema is not None:
            self.ema.step(self.net.parameters())
        self.t += 1
        return loss.item()

    def sampling_net(self):
        if isinstance(self.ema, AediffEMA):
            return self.ema.model
        if self.ema is not None:
            net = course_unet()
            net.load_state_dict(self.net.state_dict())
            self.ema.copy_to(net.parameters())
            return net.eval()
        return self.net.eval()

    @torch.no_grad()
    def sample(self, n, seed):
        from diffusers import DPMSolverMultistepScheduler

        net = self.sampling_net()
        solver = DPMSolverMultistepScheduler.from_config(self.scheduler.config)
        solver.set_timesteps(NFE)
        x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * solver.init_noise_sigma
        for t in solver.timesteps:
            x = solver.step(net(x, t).sample, t, x).prev_sample
        return x.clamp(-1, 1)


def import_denoising_diffusion_pytorch():
    """The library's model code; its Trainer's torchvision import is stubbed (torchvision is not installed
    here: a 5.5 GB CUDA build), and the Trainer's loop is reproduced in DDPMPytorchTrainee."""
    if "torchvision" not in sys.modules:
        stub = types.ModuleType("torchvision")
        stub.transforms = types.SimpleNamespace()
        stub.utils = types.SimpleNamespace()
        sys.modules["torchvision"] = stub
    from denoising_diffusion_pytorch.denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    return GaussianDiffusion, Unet, EMA


class DDPMPytorchTrainee(PeerTrainee):
    def __init__(self, settings: dict, total_steps: int):
        GaussianDiffusion, Unet, EMA = import_denoising_diffusion_pytorch()
        torch.manual_seed(0)
        self.diffusion = GaussianDiffusion(Unet(dim=32, dim_mults=(1, 2, 4), channels=1), image_size=28)
        self.parameters = sum(p.numel() for p in self.diffusion.model.parameters())
        self.opt = torch.optim.Adam(self.diffusion.parameters(), lr=settings.get("lr", 1e-4), betas=(0.9, 0.99))
        if settings.get("ema") == "aediff":
            self.ema = AediffEMA(self.diffusion, 0.999)
        else:  # the Trainer's: EMA(beta=0.995, update_every=10), ema_pytorch's other defaults
            self.ema = EMA(self.diffusion, beta=0.995, update_every=10)
        self.t = 0

    def step(self, x):
        loss = self.diffusion((x + 1) / 2)  # the library normalizes [0, 1] images itself
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if isinstance(self.ema, AediffEMA):
            self.ema.update(self.diffusion, self.t)
        else:
            self.ema.update()
        self.t += 1
        return loss.item()

    @torch.no_grad()
    def sample(self, n, seed):
        model = self.ema.model if isinstance(self.ema, AediffEMA) else self.ema.ema_model
        model.eval()
        model.sampling_timesteps, model.is_ddim_sampling = NFE, True
        torch.manual_seed(seed)
        return (model.sample(batch_size=n) * 2 - 1).clamp(-1, 1)


def peer_trainee(variant: Variant, total_steps: int) -> PeerTrainee:
    cls = DiffusersTrainee if variant.library == "diffusers" else DDPMPytorchTrainee
    return cls(variant.settings, total_steps)


def batches(train_set, seed: int = 0):
    """Shuffled batches of BATCH images in [-1, 1], epoch after epoch."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(train_set), generator=g)
        for i in range(0, len(order) - BATCH + 1, BATCH):
            yield train_set.batch(order[i : i + BATCH])["images"]


# --- phase 1: throughput on idle cores; phase 2: training to the budget ----------------------------------------


def aediff_training(variant: Variant, out: Path, data: DataConfig, steps: int) -> aediff.runs.Run:
    if variant.settings.get("model", {}).get("architecture") == "ddpm-pytorch-unet":
        import_denoising_diffusion_pytorch()  # its torchvision stub, before aediff's adapter imports the Unet
    if out.exists():
        shutil.rmtree(out)
    training = {"max_steps": steps, "batch_size": BATCH, "log_every": 10, "checkpoint_every": 10**6,
                "preview_every": 0, **variant.settings["training"]}  # fmt: skip
    # unconditional unless the variant says otherwise, as the peers' recipes and the runs measured before
    # aediff's default became class-conditioned on labelled data (recipe_search.md)
    model = {"conditioning.kind": "none", **variant.settings.get("model", {})}
    train("diffusion", out, data, model=model, training=training, progress=False)
    return aediff.load(out)


def measure_throughput(variant: Variant, train_set, data: DataConfig, scratch: Path, steps: int) -> float:
    """Training images/s of the variant's real step, median over windows of 10 steps after 5 warm-up steps."""
    if variant.library == "aediff":
        run = aediff_training(variant, scratch / "throughput", data, steps + 10)
        return median_images_per_second(run)
    trainee, source, rates = peer_trainee(variant, 10**6), batches(train_set), []
    for _ in range(5):
        trainee.step(next(source))
    for _ in range(steps // 10):
        start = time.perf_counter()
        for _ in range(10):
            trainee.step(next(source))
        rates.append(10 * BATCH / (time.perf_counter() - start))
    return statistics.median(rates)


def train_variant(variant: Variant, steps: int, train_set, data: DataConfig, runs: Path) -> tuple[Callable, dict]:
    """Train to ``steps``; returns sample(n, seed) and facts (parameters, seconds)."""
    begun = time.perf_counter()
    if variant.library == "aediff":
        run = aediff_training(variant, runs / slug(variant.name), data, steps)
        model = run.model
        facts = {"parameters": sum(p.numel() for p in model.parameters()), "run": str(run.path)}
        sample = lambda n, seed: sample_images(model, n, seed=seed)  # noqa: E731
    else:
        trainee, source = peer_trainee(variant, steps), batches(train_set)
        for _ in range(steps):
            trainee.step(next(source))
        facts = {"parameters": trainee.parameters}
        sample = lambda n, seed: torch.cat([trainee.sample(min(250, n - i), seed * 1000 + i) for i in range(0, n, 250)])  # noqa: E731
    facts["train_seconds"] = time.perf_counter() - begun
    return sample, facts


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


# --- scoring ---------------------------------------------------------------------------------------------------


class Scorer:
    """FID (+ interval, bootstrap draws) against a reference split, and the judge's reading of the samples."""

    def __init__(self, classifier, reference, name: str):
        self.classifier = classifier
        self.judge = judges_for(classifier)[0]
        self.reference, self.name = reference, name
        self.features = self.judge.reference_features(reference)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict:
        s = generation_score(images, self.judge.features, self.reference, feature_extractor=self.judge.name,
                             reference_name=self.name, seed=0, reference_features=self.features)  # fmt: skip
        probs = torch.cat([self.classifier.logits(images[i : i + 500]).softmax(-1) for i in range(0, len(images), 500)])
        confident, classes = probs.max(-1)
        return {"fid": s.fid, "fid_se": s.fid_se, "draws": s.fid_draws_values, "kid": s.kid_mean,
                "confident_share": float((confident >= 0.9).float().mean()),
                "classes_present": int(classes.unique().numel())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="budget per variant, converted to steps")
    parser.add_argument("--throughput-steps", type=int, default=30)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--val-samples", type=int, default=500)
    parser.add_argument("--classifier", type=Path, default=Path("runs/clf"))
    parser.add_argument("--only", nargs="*", help="train these variants only (names); keep the others' rows")
    parser.add_argument("--steps-check", metavar="VARIANT", help="no training: score an aediff variant's saved run "
                        "with its default sampler at 20 and 250 steps (--steps-samples each, same seeds)")  # fmt: skip
    parser.add_argument("--steps-samples", type=int, default=500)
    parser.add_argument("--reuse-budgets", action="store_true", help="with --only: train to the step budgets and "
                        "controls of the earlier run in --out (its phase 1), measuring them not again")  # fmt: skip
    parser.add_argument("--anchor", metavar="VARIANT", help="with --reuse-budgets: a variant without a recorded "
                        "budget gets the anchor's budget x their throughput ratio, both measured now")  # fmt: skip
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-peers"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/peers"))
    args = parser.parse_args()
    started = time.time()
    args.runs.mkdir(parents=True, exist_ok=True)
    data = validation_split(args.runs)
    train_set, val_set, test_set = data.load("train"), data.load("test"), load_dataset("mnist5k", "test")
    classifier = aediff.load(args.classifier).model.eval()
    score_val, score_test = (
        Scorer(classifier, val_set, "mnist5k train, validation cut"),
        Scorer(classifier, test_set, "mnist5k:test"),
    )
    if args.steps_check:  # its own results file, beside the benchmark's: OUT_steps.{json,md}
        row = json.loads(args.out.with_suffix(".json").read_text())["variants"][args.steps_check]
        check = {"command": "python " + shlex.join(sys.argv), "machine": machine(), "variant": args.steps_check,
                 **steps_check(args, row, score_test)}  # fmt: skip
        write_results(args.out.with_name(args.out.name + "_steps"), check, started, steps_markdown)
        return
    chosen = [v for v in variants() if not args.only or v.name in args.only]
    previous = json.loads(args.out.with_suffix(".json").read_text()) if args.only else {}
    command = "python " + shlex.join(sys.argv)
    results = {
        "command": command,
        "commands": [*previous.get("commands", []), command],  # every run that wrote rows of this file
        "machine": machine(diffusers=package_version("diffusers"),
                           denoising_diffusion_pytorch=package_version("denoising-diffusion-pytorch")),
        "minutes": args.minutes, "batch_size": BATCH, "nfe": NFE, "samples": args.samples,
        "val_samples": args.val_samples, "train_images": len(train_set), "validation_images": len(val_set),
        "variants": previous.get("variants", {}),
        **({"controls": previous["controls"]} if "controls" in previous else {}),
    }  # fmt: skip
    anchor = anchor_throughput(args, results["variants"], train_set, data) if args.anchor else None
    for v in chosen:  # phase 1, on idle cores: every variant's throughput, one after the other
        kept = results["variants"].get(v.name, {})
        if args.reuse_budgets and "steps" in kept:  # measured in an earlier run's phase 1
            ips, steps, budget = kept["train_images_per_s"], kept["steps"], kept.get("budget")
        else:
            ips = measure_throughput(v, train_set, data, args.runs, args.throughput_steps)
            steps, budget = max(1, round(args.minutes * 60 * ips / BATCH)), None
            if anchor is not None:  # the anchor's recorded budget, scaled by the ratio measured now
                steps = max(1, round(anchor["steps"] * ips / anchor["measured_now"]))
                ips, budget = anchor["recorded"] * ips / anchor["measured_now"], {**anchor, "measured": ips}
        results["variants"][v.name] = {"library": v.library, "role": v.role, "settings": v.settings,
                                       "train_images_per_s": ips, "steps": steps,
                                       **({"budget": budget} if budget else {})}  # fmt: skip
        print(f"{v.name}: {ips:.0f} img/s -> {steps} steps", flush=True)
    if "controls" not in results or not args.reuse_budgets:
        results["controls"] = controls(args, data, train_set, score_test)
    for v in chosen:  # phase 2: train to the budget, then score
        row = results["variants"][v.name]
        sample, facts = train_variant(v, row["steps"], train_set, data, args.runs)
        row.update(facts)
        row["validation"] = score_val(sample(args.val_samples, 1))
        begun = time.perf_counter()
        row["test"] = score_test(sample(args.samples, 0))
        row["sample_images_per_s_x_nfe"] = args.samples * NFE / (time.perf_counter() - begun)
        print(f"{v.name}: val FID {row['validation']['fid']:.2f}, test FID {row['test']['fid']:.2f}", flush=True)
        write_results(args.out, finish(results), started, markdown)
    write_results(args.out, finish(results), started, markdown)


def anchor_throughput(args, rows: dict, train_set, data: DataConfig) -> dict:
    """The anchor variant's throughput measured now, beside its recorded phase-1 figure and budget."""
    if not args.reuse_budgets or args.anchor not in rows or "steps" not in rows[args.anchor]:
        sys.exit(f"--anchor needs --reuse-budgets and a variant with a recorded budget; got {args.anchor!r}")
    variant = next(v for v in variants() if v.name == args.anchor)
    now = measure_throughput(variant, train_set, data, args.runs, args.throughput_steps)
    row = rows[args.anchor]
    print(f"anchor {args.anchor}: {now:.0f} img/s now, {row['train_images_per_s']:.0f} recorded", flush=True)
    return {"anchor": args.anchor, "measured_now": now, "recorded": row["train_images_per_s"], "steps": row["steps"]}


def steps_check(args, row: dict, score_test: Scorer) -> dict:
    """The run's default sampler at 20 and at 250 steps, from the same seeds: FID of each, their ratio and
    paired difference (the target: 20 steps within 1.25x of 250)."""
    from aediff.diffusion import SamplerOptions

    model = aediff.load(row["run"]).model
    sampler = model.config.sampling.sampler
    scores = {}
    for steps in (20, 250):
        images = sample_images(model, args.steps_samples, seed=2, options=SamplerOptions(sampler=sampler, steps=steps))
        scores[steps] = score_test(images)
        print(f"{sampler} {steps} steps: FID {scores[steps]['fid']:.2f}", flush=True)
    gap = difference_of_draws(scores[20]["fid"], scores[20]["draws"], scores[250]["fid"], scores[250]["draws"])
    return {"run": row["run"], "sampler": sampler, "samples": args.steps_samples,
            "fid": {str(k): v["fid"] for k, v in scores.items()},
            "fid_se": {str(k): v["fid_se"] for k, v in scores.items()},
            "ratio": scores[20]["fid"] / scores[250]["fid"], "difference": gap.to_dict()}  # fmt: skip


def validation_split(runs: Path) -> DataConfig:
    """mnist5k's training split as an npz whose held-out 12.5% (500 images, seed SPLIT_SEED) is the validation
    split: DataConfig.load("train") gives the other 3,500."""
    path = runs / "mnist5k-train.npz"
    if not path.exists():
        full = load_dataset("mnist5k", "train")
        np.savez(path, images=full.images.permute(0, 2, 3, 1).numpy(), labels=full.labels.numpy())
    return DataConfig(spec=f"npz:{path}", seed=SPLIT_SEED, test_fraction=VALIDATION / 4000)


def controls(args, data: DataConfig, train_set, score_test: Scorer) -> dict:
    """The floor (real training images scored as samples) and the untrained aediff network (must lose)."""
    g = torch.Generator().manual_seed(0)
    real = train_set.batch(torch.randperm(len(train_set), generator=g)[: args.samples])["images"]
    untrained = aediff_training(Variant("untrained", "aediff", "control", {"training": {"lr": 1e-12}}),
                                args.runs / "untrained", data, 1)  # fmt: skip
    return {
        "real training images": score_test(real),
        "aediff, untrained network": score_test(sample_images(untrained.model, args.samples, seed=0)),
    }


def finish(results: dict) -> dict:
    """Add the choices made on validation and each row's paired test-FID difference to aediff's default."""
    rows = results["variants"]
    scored = {k: v for k, v in rows.items() if "test" in v}
    reference = scored.get(DEFAULT)
    for row in scored.values():
        if reference is not None:
            gap = difference_of_draws(row["test"]["fid"], row["test"]["draws"], reference["test"]["fid"],
                                      reference["test"]["draws"])  # fmt: skip
            row["test"]["minus_default"] = gap.to_dict()
    chosen = {}
    for library in ("aediff", "diffusers", "ddpm-pytorch"):
        tuned = {
            k: v
            for k, v in scored.items()
            if v["library"] == library and not v["role"].startswith("(c)")  # the adapter row is not a choice
        }
        if tuned:
            chosen[library] = min(tuned, key=lambda k: tuned[k]["validation"]["fid"])
    results["chosen_on_validation"] = chosen
    return results


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Diffusion on mnist5k, 10 CPU minutes each: aediff and its peers, fairly",
        "",
        f"{' then '.join(f'`{c}`' for c in r.get('commands', [r['command']]))}, "
        f"on {m['cpu']} ({m['threads']} threads), torch {m['torch']}, diffusers {m['diffusers']}, "
        f"denoising-diffusion-pytorch {m['denoising_diffusion_pytorch']}. Budget: {r['minutes']} min of each "
        f"variant's own idle-core throughput, as steps of batch {r['batch_size']}; training on {r['train_images']} "
        f"images, choices on {r['validation_images']} validation images ({r['val_samples']} samples), test on "
        f"mnist5k's test split ({r['samples']} samples, {r['nfe']} NFE). FID +- 95% (bootstrap) in the classifier "
        "judge's features; 'minus default' is the paired difference to aediff's default; 'confident' is the share "
        "of samples the judge reads with probability >= 0.9.",
        "",
        "| variant | role | params | img/s | steps | val FID | test FID | minus default | KID | confident | classes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in r["variants"].items():
        if "test" not in v:
            continue
        t, gap = v["test"], v["test"].get("minus_default")
        gap_text = f"{gap['value']:+.2f} +- {1.96 * gap['se']:.2f}" if gap and name != DEFAULT else ""
        mark = " (chosen)" if name in r.get("chosen_on_validation", {}).values() else ""
        lines.append(
            f"| {name}{mark} | {v['role']} | {v['parameters'] / 1e6:.2f}M | {v['train_images_per_s']:.0f} | "
            f"{v['steps']} | {v['validation']['fid']:.2f} | {t['fid']:.2f} +- {1.96 * (t['fid_se'] or 0):.2f} | "
            f"{gap_text} | {t['kid']:.3f} | {t['confident_share']:.3f} | {t['classes_present']} |"
        )
    for name, v in r["variants"].items():
        if "test" in v and "budget" in v:
            b = v["budget"]
            lines += ["", f"{name}: added later; budget = {b['anchor']}'s {b['steps']} steps x {b['measured']:.1f} / "
                      f"{b['measured_now']:.1f} img/s (the two measured one after the other, in that run); its "
                      f"img/s is on the phase-1 scale ({b['recorded']:.1f} recorded for the anchor)."]  # fmt: skip
    lines += ["", "Controls (test split):", "", "| control | FID | confident | classes |", "|---|---|---|---|"]
    for name, c in r.get("controls", {}).items():
        lines.append(f"| {name} | {c['fid']:.2f} +- {1.96 * (c['fid_se'] or 0):.2f} | {c['confident_share']:.3f} | "
                     f"{c['classes_present']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def steps_markdown(check: dict) -> str:
    gap, m = check["difference"], check["machine"]
    return (
        f"# 20 against 250 sampling steps\n\n`{check['command']}` on {m['cpu']}: {check['variant']} "
        f"({check['run']}), {check['sampler']}, {check['samples']} samples from the same seeds, FID on mnist5k's "
        f"test split in the classifier judge's features: {check['fid']['20']:.2f} +- "
        f"{1.96 * check['fid_se']['20']:.2f} at 20 steps, {check['fid']['250']:.2f} +- "
        f"{1.96 * check['fid_se']['250']:.2f} at 250; ratio {check['ratio']:.2f}, paired difference "
        f"{gap['value']:+.2f} +- {1.96 * gap['se']:.2f}.\n"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

"""The comparison's evaluation (one protocol for every model) and its report: nine sections, each a claim,
the figure that tests it and the verdict computed from the numbers (see ``aediff.reports.compare``).

Margins that separate "holds" from "inconclusive": 0.1 dB of PSNR; two standard errors of an accuracy;
10% of the smaller FID; 2% of the smaller diffusion loss. They are printed beside every verdict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

import aediff
from aediff.data import caption_templates, fill_template
from aediff.evaluation import (
    evaluate_model,
    generation_score,
    gradient_norms,
    interpolation_grid,
    latent_codes,
    latent_map,
    predicted_classes,
    predicted_x0_sweep,
    sample_images,
    spread_indices,
    umap_available,
)
from aediff.models import Capability, Condition, Model
from aediff.reports import figures
from aediff.reports.html import Figure, Section, Table, render_report, write_report
from aediff.reports.verdicts import accuracy_margin, all_of, compare_values, spearman

PSNR_MARGIN = 0.1  # dB
FID_RELATIVE_MARGIN = 0.10
LOSS_RELATIVE_MARGIN = 0.02
X0_SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0)  # section 6's row of noise levels


@torch.no_grad()
def held_out_diffusion_loss(model: Model, dataset: Any, limit: int, seed: int = 0, draws: int = 4) -> float:
    """The training objective on test images (null condition), averaged over ``draws`` seeded noise draws:
    the same noise levels and noise for every model, so two models' losses compare directly."""
    model.eval()
    device = model.device
    images = dataset.batch(spread_indices(len(dataset), limit))["images"].to(device)
    total = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # leave the caller's RNG be
        for draw in range(draws):
            torch.manual_seed(seed + draw)
            total += float(model.denoising_loss(model.diffusion_input(images), model.condition_inputs(len(images))))
    return total / draws


def _logged(run: Path, key: str = "loss") -> tuple[list[float], list[float]]:
    steps, values = [], []
    path = Path(run) / "log.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if key in row and math.isfinite(row[key]):
                steps.append(float(row["step"]))
                values.append(float(row[key]))
    return steps, values


def _conditional_accuracy(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predicted_classes(classifier, images) == labels).float().mean())


def _inception_if_on_disk():
    """Inception-v3 features when torch-fidelity and its weights are installed; else None (never downloads)."""
    from aediff.errors import ConfigError
    from aediff.metrics import inception_extractor

    try:
        return inception_extractor()
    except ConfigError:
        return None


def evaluate_all(config, plan, runs: dict[str, Path], train_set, test_set, meter, log=None) -> dict[str, Any]:
    """Evaluate every model of the plan with one protocol. Returns {"models": per-model metrics (JSON),
    "artifacts": images and arrays for the figures (not JSON), "sections": section-specific numbers}."""
    judge = aediff.load(runs["classifier"]) if "classifier" in runs else None
    classifier = judge.model if judge is not None else None
    limited = test_set.subset(spread_indices(len(test_set), config.limit))
    reference = f"{config.data}:test"
    extractor = f"classifier:{runs['classifier']}" if classifier is not None else None
    inception = _inception_if_on_disk()
    models: dict[str, dict[str, Any]] = {}
    artifacts: dict[str, Any] = {"samples": {}, "reconstructions": {}, "codes": {}}
    sections: dict[str, Any] = {}
    first = test_set.batch(spread_indices(len(test_set), 8))["images"]
    artifacts["originals"] = first
    if judge is not None:
        models["classifier"] = {**evaluate_model(judge, train_set, test_set), "role": "judge"}
    for planned in plan:
        if planned.judge:
            continue
        begun = meter.start(f"evaluating {planned.name}")
        run = aediff.load(runs[planned.name])
        model = run.model
        # Unconditional samples for every model (a conditioned one draws with the null condition), so that
        # the FIDs of section 9 compare like with like; section 8 measures the conditioned samples.
        m = evaluate_model(
            run,
            train_set,
            test_set,
            classifier=judge,
            samples=config.samples,
            seed=config.seed,
            limit=config.limit,
            inception=inception,
            cycle_classes=False,
            denoising_steps=(1, config.denoise_steps) if planned.name == "diffusion" else (1,),
        )
        m["role"] = planned.role
        artifacts["samples"][planned.name] = sample_images(model, 64, seed=config.seed)
        if model.can(Capability.LATENT):
            artifacts["reconstructions"][planned.name] = model.reconstruct(first.to(model.device)).cpu()
        if model.can(Capability.ELBO):
            artifacts["interpolation"] = interpolation_grid(model, test_set, seed=config.seed)
        if model.can(Capability.DIFFUSION_BOUND):  # pixel diffusion: its loss and gradients compare directly
            m["held_out_loss"] = held_out_diffusion_loss(model, test_set, config.limit, seed=config.seed)
            batch = train_set.batch(spread_indices(len(train_set), 64))
            batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            m["gradient_norms"] = gradient_norms(model, batch, seed=config.seed)
        if "latent_space" in m and planned.name != "ae-spatial":
            codes, labels = latent_codes(model, limited)
            artifacts["codes"][planned.name] = (codes, labels)
        if planned.name == "diffusion":
            sections["x0"] = predicted_x0_sweep(
                model,
                test_set.batch(spread_indices(len(test_set), 6))["images"].to(model.device),
                X0_SIGMAS,
                seed=config.seed,
            )
            if classifier is not None and model.can(Capability.CLASS_CONDITION):
                sections["guidance"], artifacts["class_grid"] = _guidance_sweep(
                    model, classifier, config, test_set, extractor, reference
                )
        if planned.name == "latent-diffusion" and classifier is not None and model.can(Capability.TEXT_CONDITION):
            sections["prompts"], artifacts["prompt_grid"] = _prompt_grid(model, classifier, config, train_set)
        models[planned.name] = m
        meter.finish("eval", begun)
        if log:
            log(f"evaluated {planned.name}")
    return {"models": models, "artifacts": artifacts, "sections": sections}


def _guidance_sweep(model, classifier, config, test_set, extractor, reference) -> tuple[dict, torch.Tensor]:
    n = max(10, (config.samples // 2) // 10 * 10)
    labels = torch.arange(n) % 10
    rows, grid = {}, None
    for w in config.guidances:
        images = sample_images(model, n, config.seed + 1, Condition(class_labels=labels, guidance=w))
        score = generation_score(
            images,
            classifier.features,
            test_set,
            feature_extractor=extractor,
            reference_name=reference,
            seed=config.seed,
        ).to_dict()
        rows[f"{w:g}"] = {
            "guidance": w,
            "accuracy": _conditional_accuracy(classifier, images, labels),
            "samples": n,
            **score,
        }
        if grid is None or abs(w - 3.0) < abs(grid[0] - 3.0):
            per_class = min(8, n // 10)
            order = torch.cat([torch.nonzero(labels == d).flatten()[:per_class] for d in range(10)])
            grid = (w, images[order])
    return rows, grid


def _prompt_grid(model, classifier, config, train_set) -> tuple[dict, Any]:
    names = train_set.class_names or [str(d) for d in range(10)]
    template = caption_templates(names)[0]
    prompts = [fill_template(template, names[d]) for d in range(len(names)) for _ in range(8)]
    labels = torch.tensor([d for d in range(len(names)) for _ in range(8)])
    images = sample_images(model, len(prompts), config.seed + 2, Condition(prompts=prompts, guidance=3.0))
    accuracy = _conditional_accuracy(classifier, images, labels)
    return {"template": template, "guidance": 3.0, "accuracy": accuracy, "samples": len(prompts)}, (names, images)


# --- the report ----------------------------------------------------------------------------------------------


def _psnr_at(m: dict, kind: str, level: float, steps: int = 1) -> float | None:
    for row in m.get("denoising", []):
        if row["kind"] == kind and abs(row["level"] - level) < 1e-9 and row["steps"] == steps:
            return row["psnr"]
    return None


def _fid(m: dict) -> float | None:
    return m.get("generation", {}).get("fid")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def build_report(results: dict[str, Any], plan, out: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """Turn ``evaluate_all``'s results into the nine sections; write report.html, metrics.json, CSVs, PNGs.
    Returns (the metrics written to metrics.json, the paths written)."""
    models, art, extra = results["models"], results["artifacts"], results["sections"]
    config = results["meta"]["config"]
    bottleneck_sweep = sorted((p for p in plan if p.sweep == "bottleneck"), key=lambda p: p.bottleneck)
    aes = [p.name for p in bottleneck_sweep]
    daes = [p.name for p in plan if p.sweep == "noise"]
    shared_ae = f"ae-{sorted(config['bottlenecks'])[len(config['bottlenecks']) // 2]}"
    sections: list[Section] = []
    verdicts: dict[str, dict[str, Any]] = {}

    def add(key, title, claim, verdict, evidence, figs, tables=(), notes=""):
        sections.append(Section(key, title, claim, verdict, evidence, list(figs), list(tables), notes))
        verdicts[key] = {"claim": claim, "verdict": verdict, "evidence": evidence}

    # 1. Bottleneck
    sizes = [p.bottleneck for p in bottleneck_sweep]
    psnrs = [models[n]["reconstruction"]["psnr"] for n in aes]
    parts = [compare_values(psnrs[i + 1], psnrs[i], PSNR_MARGIN) for i in range(len(psnrs) - 1)]
    recon_rows = [art["originals"]] + [art["reconstructions"][n] for n in aes]
    add(
        "bottleneck",
        "1. Bottleneck",
        "A wider bottleneck reconstructs better: PSNR rises with its size.",
        all_of(parts),
        "Test PSNR "
        + ", ".join(f"{s}-d {p:.2f} dB" for s, p in zip(sizes, psnrs, strict=True))
        + f" (each step must gain more than {PSNR_MARGIN} dB).",
        [
            Figure(
                "bottleneck_psnr",
                figures.line_plot(
                    {"AE": (sizes, psnrs)},
                    title="Reconstruction against bottleneck size",
                    xlabel="bottleneck size (numbers)",
                    ylabel="test PSNR (dB)",
                    logx=True,
                ),
                "Test-set PSNR of each AE's reconstructions.",
            ),
            Figure(
                "bottleneck_reconstructions",
                figures.image_grid(
                    torch.cat(recon_rows),
                    nrow=len(art["originals"]),
                    row_labels=["test images"] + [f"{s}-d" for s in sizes],
                ),
                "Top row: test images; below: reconstructions by AEs with growing bottlenecks.",
            ),
        ],
        [
            Table(
                "bottleneck",
                ["model", "bottleneck", "PSNR (dB)", "SSIM", "MSE"],
                [
                    [
                        n,
                        s,
                        models[n]["reconstruction"]["psnr"],
                        models[n]["reconstruction"]["ssim"],
                        models[n]["reconstruction"]["mse"],
                    ]
                    for n, s in zip(aes, sizes, strict=True)
                ],
            )
        ],
    )

    # 2. VAE
    vae, ae = models.get("vae"), models.get(shared_ae)
    if vae is not None and ae is not None:
        lik = vae["likelihood"]
        vae_fid, ae_fid = _fid(vae), _fid(ae)
        if vae_fid is not None and ae_fid is not None:
            margin = FID_RELATIVE_MARGIN * min(vae_fid, ae_fid)
            verdict = compare_values(vae_fid, ae_fid, margin, higher_is_better=False)
            evidence = (
                f"FID of prior samples: VAE {vae_fid:.2f}, AE (Gaussian fitted to its latents) {ae_fid:.2f} "
                f"(margin {FID_RELATIVE_MARGIN:.0%} of the smaller). "
            )
        else:
            verdict, evidence = "inconclusive", "No classifier features to score samples with. "
        evidence += (
            f"Test ELBO {lik['elbo_bits_per_dim']:.3f} bits/dim, IWAE (k={lik['iwae_k']}) "
            f"{lik['iwae_bits_per_dim']:.3f} bits/dim."
        )
        figs = [
            Figure(
                "vae_samples",
                figures.image_grid(art["samples"]["vae"][:64], nrow=8),
                "Samples from the VAE's prior N(0, I), decoded.",
            ),
            Figure(
                "ae_samples",
                figures.image_grid(art["samples"][shared_ae][:64], nrow=8),
                f"Samples of {shared_ae}: a Gaussian fitted to its latents, decoded.",
            ),
        ]
        if "interpolation" in art:
            steps = len(art["interpolation"]) // 4
            figs.append(
                Figure(
                    "vae_interpolation",
                    figures.image_grid(art["interpolation"], nrow=steps),
                    "Each row decodes a straight line in the VAE's latent space between two test images.",
                )
            )
        add(
            "vae",
            "2. Variational autoencoder",
            "Sampling the VAE's prior gives better images than sampling a "
            "Gaussian fitted to a plain AE's latents (same bottleneck).",
            verdict,
            evidence,
            figs,
            [
                Table(
                    "vae_likelihood",
                    ["bound", "nats / image", "bits/dim"],
                    [
                        ["ELBO", lik["nll_elbo_nats"], lik["elbo_bits_per_dim"]],
                        [f"IWAE, k={lik['iwae_k']}", lik["nll_iwae_nats"], lik["iwae_bits_per_dim"]],
                    ],
                    f"{lik['num_images']} test images, {lik['data']}.",
                )
            ],
        )

    # 3. DAE
    if daes and ae is not None:
        parts, rows = [], []
        for name in daes:
            sigma = float(name.split("-")[1])
            dae_psnr, ae_psnr = _psnr_at(models[name], "gaussian", sigma), _psnr_at(ae, "gaussian", sigma)
            parts.append(compare_values(dae_psnr, ae_psnr, PSNR_MARGIN))
            rows.append([name, sigma, dae_psnr, ae_psnr, dae_psnr - ae_psnr])
        evidence = (
            "; ".join(f"sigma {r[1]:g}: DAE {r[2]:.2f} dB vs AE {r[3]:.2f} dB" for r in rows)
            + f" (margin {PSNR_MARGIN} dB)."
        )
        figs = [
            Figure(
                "dae_denoising",
                figures.bar_plot(
                    {f"{r[0]} / AE at {r[1]:g}": r[4] for r in rows},
                    title="DAE minus AE, PSNR at the DAE's training level",
                    ylabel="PSNR gain (dB)",
                ),
                "Positive bars: the DAE denoises its own noise level better than the plain AE.",
            )
        ]
        tables = [Table("dae_denoising", ["model", "sigma", "DAE PSNR (dB)", "AE PSNR (dB)", "gain (dB)"], rows)]
        probe_rows, probe_parts = [], []
        if "latent_space" in ae:
            ref = ae["latent_space"]
            for name in [shared_ae, *daes]:
                ls = models[name]["latent_space"]
                probe_rows.append([name, ls["knn_accuracy"], ls["linear_probe_accuracy"], ls["probe_accuracy_noisy"]])
            middle = daes[len(daes) // 2]
            ls = models[middle]["latent_space"]
            margin = accuracy_margin(ref["probe_accuracy_noisy"], ls["num_test"])
            probe_parts.append(compare_values(ls["probe_accuracy_noisy"], ref["probe_accuracy_noisy"], margin))
            evidence += (
                f" Linear probe on latents of noisy inputs ({ref['noisy']}): {middle} "
                f"{ls['probe_accuracy_noisy']:.3f} vs {shared_ae} {ref['probe_accuracy_noisy']:.3f} "
                f"(margin {margin:.3f}); on clean inputs {ls['linear_probe_accuracy']:.3f} vs "
                f"{ref['linear_probe_accuracy']:.3f}."
            )
            figs.append(
                Figure(
                    "probe_accuracy",
                    figures.bar_plot(
                        {r[0]: r[3] for r in probe_rows},
                        title=f"Linear probe on latents of noisy inputs ({ref['noisy']})",
                        ylabel="accuracy",
                    ),
                    "A logistic regression fitted on clean training latents, "
                    "scored on the latents of noisy test images: how robust is each code?",
                )
            )
            tables.append(
                Table("latent_probes", ["model", "k-NN accuracy", "linear probe", "probe, noisy inputs"], probe_rows)
            )
        add(
            "dae",
            "3. Denoising autoencoders",
            "A DAE denoises at its training level better than the plain AE, "
            "and its latents are more robust: a linear probe loses less accuracy on noisy inputs.",
            all_of(parts + probe_parts),
            evidence,
            figs,
            tables,
        )

    # 4. Manifold
    if art["codes"]:
        shown = [n for n in (shared_ae, "vae", daes[len(daes) // 2] if daes else None) if n in art["codes"]]
        maps = {n: (latent_map(art["codes"][n][0], "pca", seed=0), art["codes"][n][1]) for n in shown}
        figs = [
            Figure(
                "latent_maps_pca",
                figures.scatter_maps(maps, title="Latent space, PCA to 2-D"),
                "Test-set latents of each model, projected by PCA, coloured by class.",
            )
        ]
        if umap_available():
            umaps = {n: (latent_map(art["codes"][n][0], "umap", seed=0), art["codes"][n][1]) for n in shown}
            figs.append(
                Figure(
                    "latent_maps_umap",
                    figures.scatter_maps(umaps, title="Latent space, UMAP"),
                    "The same latents embedded by UMAP.",
                )
            )
        knn = {n: models[n]["latent_space"]["knn_accuracy"] for n in shown}
        chance = 1 / max(len(np.unique(art["codes"][shown[0]][1])), 1)
        verdict = (
            "holds"
            if min(knn.values()) > 5 * chance
            else ("does not hold" if min(knn.values()) < 2 * chance else "inconclusive")
        )
        add(
            "manifold",
            "4. The learned manifold",
            "Classes form clusters in every autoencoder's latent space: "
            "k-NN accuracy of the latents is far above chance (over 5x).",
            verdict,
            "k-NN (k=5) accuracy: "
            + ", ".join(f"{n} {v:.3f}" for n, v in knn.items())
            + f"; chance {chance:.3f}."
            + ("" if umap_available() else " UMAP maps need `pip install umap-learn`."),
            figs,
            [
                Table(
                    "knn",
                    ["model", "k-NN accuracy", "linear probe"],
                    [
                        [
                            n,
                            models[n]["latent_space"]["knn_accuracy"],
                            models[n]["latent_space"]["linear_probe_accuracy"],
                        ]
                        for n in shown
                    ],
                )
            ],
        )

    # 5. One diffusion model for all noise levels
    diff = models.get("diffusion")
    if diff is not None and daes:
        sigmas = sorted({r["level"] for r in diff["denoising"] if r["kind"] == "gaussian"})
        noisy = {r["level"]: r["psnr_noisy"] for r in diff["denoising"] if r["kind"] == "gaussian"}
        series = {"noisy input": (sigmas, [noisy[s] for s in sigmas])}
        series["diffusion, 1 step"] = (sigmas, [_psnr_at(diff, "gaussian", s) for s in sigmas])
        if any(r["steps"] > 1 for r in diff["denoising"]):
            k = config["denoise_steps"]
            series[f"diffusion, {k} steps"] = (sigmas, [_psnr_at(diff, "gaussian", s, k) for s in sigmas])
        for name in [*daes, shared_ae]:
            series[name] = (sigmas, [_psnr_at(models[name], "gaussian", s) for s in sigmas])
        parts, pieces = [], []
        for name in daes:
            sigma = float(name.split("-")[1])
            d, a = _psnr_at(diff, "gaussian", sigma), _psnr_at(models[name], "gaussian", sigma)
            parts.append("does not hold" if d < a - PSNR_MARGIN else "holds")
            pieces.append(f"sigma {sigma:g}: diffusion {d:.2f} dB vs {name} {a:.2f} dB")
        grid_models = ["diffusion", *daes, shared_ae, "vae"]
        kinds = [(r["kind"], r["level"]) for r in models[shared_ae]["denoising"]]
        matrix = np.array([[(_psnr_at(models[n], k, lv) or float("nan")) for k, lv in kinds] for n in grid_models])
        add(
            "noise_levels",
            "5. One diffusion model for every noise level",
            "A single diffusion model, told the "
            "noise level, denoises each DAE's own noise level at least as well as that DAE (within "
            f"{PSNR_MARGIN} dB).",
            all_of(parts),
            "; ".join(pieces) + ".",
            [
                Figure(
                    "denoising_sweep",
                    figures.line_plot(
                        series,
                        title="Denoising: PSNR against noise level",
                        xlabel="Gaussian sigma ([-1, 1] pixel units)",
                        ylabel="PSNR against the clean image (dB)",
                        logx=True,
                    ),
                    "Every model denoises the same noisy test images; DAEs were each trained at one "
                    "sigma, the diffusion model at all.",
                ),
                Figure(
                    "denoising_table",
                    figures.heatmap(
                        matrix,
                        grid_models,
                        [f"{k} {lv:g}" for k, lv in kinds],
                        title="PSNR (dB) by corruption",
                        fmt="{:.1f}",
                    ),
                    "Gaussian noise and masking; the diffusion model is not asked to fill masked pixels (blank).",
                ),
            ],
            [
                Table(
                    "denoising",
                    ["model", "corruption", "steps", "PSNR (dB)", "input PSNR (dB)", "SSIM"],
                    [
                        [n, r["corruption"], r["steps"], r["psnr"], r["psnr_noisy"], r["ssim"]]
                        for n in grid_models
                        for r in models[n].get("denoising", [])
                    ],
                )
            ],
        )

    # 6. Blurry at high t, sharp at low t
    x0 = extra.get("x0")
    if x0 is not None:
        shares = x0["high_frequency_share"]
        rho = spearman(x0["sigmas"], shares)
        verdict = "holds" if rho < -0.8 else ("does not hold" if rho > 0 else "inconclusive")
        predictions = x0["predictions"]  # [len(sigmas), N, C, H, W]
        n_images = predictions.shape[1]
        rows = predictions.transpose(0, 1).reshape(-1, *predictions.shape[2:])
        add(
            "blur",
            "6. Blurry at high noise, sharp at low noise",
            "The predicted x0 loses its fine detail as the "
            "noise level rises: the high-frequency share of its power spectrum falls with sigma (Spearman rho "
            "below -0.8).",
            verdict,
            f"Spearman rho between sigma and high-frequency share: {rho:.2f}; share at sigma {x0['sigmas'][0]:g} "
            f"{shares[0]:.3f}, at sigma {x0['sigmas'][-1]:g} {shares[-1]:.3f}; the data's own share "
            f"{x0['data_high_frequency_share']:.3f}.",
            [
                Figure(
                    "predicted_x0",
                    figures.image_grid(rows, nrow=len(x0["sigmas"]), col_labels=[f"{s:g}" for s in x0["sigmas"]]),
                    f"Each row: one test image's predicted x0 at "
                    f"the noise levels on top (sigma, [-1, 1] pixel units); {n_images} images.",
                ),
                Figure(
                    "high_frequency_share",
                    figures.line_plot(
                        {
                            "predicted x0": (x0["sigmas"], shares),
                            "data": (x0["sigmas"], [x0["data_high_frequency_share"]] * len(shares)),
                        },
                        title="High-frequency share of the predicted x0",
                        xlabel="sigma",
                        ylabel="share of power above half the Nyquist frequency",
                        logx=True,
                    ),
                    "Power above half the Nyquist frequency, as a share of all (mean removed).",
                ),
            ],
        )

    # 7. Skips
    noskip = models.get("diffusion-noskip")
    if diff is not None and noskip is not None:
        la, lb = diff["held_out_loss"], noskip["held_out_loss"]
        parts = [compare_values(la, lb, LOSS_RELATIVE_MARGIN * min(la, lb), higher_is_better=False)]
        evidence = f"Held-out diffusion loss: with skips {la:.4f}, without {lb:.4f}"
        fa, fb = _fid(diff), _fid(noskip)
        if fa is not None and fb is not None:
            parts.append(compare_values(fa, fb, FID_RELATIVE_MARGIN * min(fa, fb), higher_is_better=False))
            evidence += f"; FID with skips {fa:.2f}, without {fb:.2f}"
        evidence += (
            f"; training steps {diff['training_speed']['steps']} vs {noskip['training_speed']['steps']} "
            "in the same budget"
        )
        runs_of = results["meta"]["runs"]
        curves = {"with skips": _logged(runs_of["diffusion"]), "without skips": _logged(runs_of["diffusion-noskip"])}
        grads = {"with skips": diff["gradient_norms"], "without skips": noskip["gradient_norms"]}
        blocks = list(dict.fromkeys([*diff["gradient_norms"], *noskip["gradient_norms"]]))  # union, network order
        add(
            "skips",
            "7. A U-Net is an autoencoder with skips",
            "At equal budget, skip connections give a lower "
            "diffusion loss and a better FID than the same network without them.",
            all_of(parts),
            evidence + ".",
            [
                Figure(
                    "skip_loss",
                    figures.line_plot(
                        {k: v for k, v in curves.items() if v[0]},
                        title="Training loss",
                        xlabel="step",
                        ylabel="loss",
                        logy=True,
                    ),
                    "Logged training loss of the two networks.",
                ),
                Figure(
                    "gradient_norms",
                    figures.line_plot(
                        {k: ([blocks.index(b) for b in v], list(v.values())) for k, v in grads.items()},
                        title="Gradient norm per block (network order)",
                        xlabel="block index (see table)",
                        ylabel="L2 norm of the gradient",
                        logy=True,
                    ),
                    "One training batch; blocks in network order, encoder to decoder.",
                ),
            ],
            [
                Table(
                    "gradient_norms",
                    ["block", "with skips", "without skips"],
                    [[b, diff["gradient_norms"].get(b, "n/a"), noskip["gradient_norms"].get(b, "n/a")] for b in blocks],
                )
            ],
        )

    # 8. Conditioning
    guidance = extra.get("guidance")
    if guidance:
        rows = sorted(guidance.values(), key=lambda r: r["guidance"])
        low, high = rows[0], max(rows, key=lambda r: r["guidance"])
        margin = accuracy_margin(low["accuracy"], low["samples"])
        verdict = compare_values(high["accuracy"], low["accuracy"], margin)
        w, class_images = art["class_grid"]
        figs = [
            Figure(
                "class_grid",
                figures.image_grid(class_images, nrow=len(class_images) // 10, row_labels=[str(d) for d in range(10)]),
                f"Class-conditioned samples at guidance {w:g}, one row per class.",
            ),
            Figure(
                "guidance",
                figures.line_plot(
                    {"accuracy": ([r["guidance"] for r in rows], [r["accuracy"] for r in rows])},
                    title="Conditional accuracy against guidance",
                    xlabel="guidance scale",
                    ylabel="accuracy",
                ),
                "Share of samples the classifier assigns to the requested class.",
            ),
            Figure(
                "guidance_fid",
                figures.line_plot(
                    {
                        "FID": ([r["guidance"] for r in rows], [r["fid"] for r in rows]),
                        "recall x 10": ([r["guidance"] for r in rows], [10 * r["recall"] for r in rows]),
                    },
                    title="Quality-diversity trade-off",
                    xlabel="guidance scale",
                    ylabel="FID / recall x 10",
                ),
                "FID and recall of the conditional samples against the test split.",
            ),
        ]
        evidence = (
            ", ".join(
                f"guidance {r['guidance']:g}: accuracy {r['accuracy']:.3f}, FID {r['fid']:.2f}, "
                f"recall {r['recall']:.3f}"
                for r in rows
            )
            + f" (margin {margin:.3f})."
        )
        prompts = extra.get("prompts")
        if prompts:
            names, images = art["prompt_grid"]
            figs.append(
                Figure(
                    "prompt_grid",
                    figures.image_grid(
                        images, nrow=8, row_labels=[fill_template(prompts["template"], n) for n in names]
                    ),
                    "Text-conditioned latent diffusion: one row per caption, guidance 3.",
                )
            )
            evidence += f" Text prompts (latent diffusion, guidance 3): accuracy {prompts['accuracy']:.3f}."
        add(
            "conditioning",
            "8. Conditioning and guidance",
            "Classifier-free guidance raises conditional accuracy "
            "(the classifier agrees with the requested class more often at the highest scale than at 1).",
            verdict,
            evidence,
            figs,
            [
                Table(
                    "guidance",
                    ["guidance", "accuracy", "FID", "KID", "precision", "recall", "samples"],
                    [
                        [
                            r["guidance"],
                            r["accuracy"],
                            r["fid"],
                            r["kid_mean"],
                            r["precision"],
                            r["recall"],
                            r["samples"],
                        ]
                        for r in rows
                    ],
                )
            ],
        )

    # 9. One table
    rows = []
    judges = {p.name for p in plan if p.judge}
    for name, m in models.items():
        if name in judges:
            continue
        g, lik = m.get("generation", {}), m.get("likelihood", {})
        bpd = lik.get("bits_per_dim", lik.get("iwae_bits_per_dim"))
        rows.append(
            [
                name,
                m["family"],
                m["trainable_parameters"],
                g.get("fid"),
                g.get("kid_mean"),
                g.get("precision"),
                g.get("recall"),
                bpd,
                m["sampling_speed"]["nfe"],
                m["sampling_speed"]["images_per_second"],
                m["training_speed"]["images_per_second"],
                m["training_speed"]["wall_seconds"],
            ]
        )
    best = min((r for r in rows if r[3] is not None), key=lambda r: r[3], default=None)
    table = Table(
        "summary",
        [
            "model",
            "family",
            "parameters",
            "FID",
            "KID",
            "precision",
            "recall",
            "bits/dim",
            "NFE / sample",
            "samples / s",
            "train images / s",
            "train seconds",
        ],
        [[("n/a" if v is None else v) for v in r] for r in rows],
        "FID / KID / precision / recall in the classifier's features against the test split; bits/dim: "
        "IWAE for the VAE, the variational bound for pixel diffusion.",
    )
    fid_bars = {r[0]: r[3] for r in rows if r[3] is not None}
    add(
        "summary",
        "9. Every model in one table",
        "The diffusion models generate better samples than every member of the autoencoder family (lowest FID).",
        "holds"
        if best is not None and Capability.SAMPLER.value in models[best[0]]["capabilities"]
        else ("does not hold" if best else "inconclusive"),
        (f"Lowest FID: {best[0]} ({best[3]:.2f})." if best else "No FID measured.")
        + (
            f" For context, not for the verdict: the class-conditioned diffusion model's samples at guidance 1, "
            f"classes in the test split's proportions, score FID {guidance['1']['fid']:.2f}; unconditional "
            "samples come from the null class, seen in 10% of training."
            if guidance and "1" in guidance
            else ""
        ),
        [
            Figure(
                "fid_all",
                figures.bar_plot(fid_bars, title="FID of every model's samples", ylabel="FID (lower is better)"),
                "Same sample count, features and reference for every model.",
            )
        ]
        if fid_bars
        else [],
        [table],
    )

    metrics = {
        "meta": results["meta"],
        "models": models,
        "verdicts": verdicts,
        "sections": {k: v for k, v in extra.items() if k != "x0"},
    }
    if x0 is not None:
        metrics["sections"]["x0"] = {k: x0[k] for k in ("sigmas", "high_frequency_share", "data_high_frequency_share")}
    meta = results["meta"]
    meta["report"] = str(Path(out) / "report.html")
    html = render_report(
        f"aediff compare: {meta['data']}",
        sections,
        meta={
            "dataset": meta["data"],
            "budget": _duration(meta["budget_minutes"] * 60)
            + " of training per model"
            + (f" (at most {meta['max_steps']} steps)" if meta.get("max_steps") else ""),
            "date": meta["date"],
            "machine": f"{meta['machine']}, {meta['threads']} threads, {meta['device']}",
            "versions": f"aediff {meta['aediff']}, torch {meta['torch']}, python {meta['python']}",
            "wall time": _duration(meta["wall_seconds"]),
            "command": meta.get("command", ""),
        },
    )
    all_figures = [f for s in sections for f in s.figures]
    all_tables = [t for s in sections for t in s.tables]
    return metrics, write_report(out, html, all_figures, all_tables, metrics)

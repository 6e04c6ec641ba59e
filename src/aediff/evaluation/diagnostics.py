"""Training diagnostics: how large the gradient of the training loss is in each block of the network."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from aediff.blocks import Decoder, Encoder
from aediff.diffusion.parameterization import Denoiser
from aediff.evaluation.protocols import model_device
from aediff.models import Model
from aediff.models.unet import UNet

# Modules that are only containers of blocks: they are split into their children. Everything else (a
# ResBlock, an attention layer, a Downsample, the stem, an embedding, the latent heads) is one block.
_CONTAINERS = (Encoder, Decoder, UNet, Denoiser, nn.ModuleList)


def network_blocks(model: Model) -> dict[str, nn.Module]:
    """The blocks whose gradients ``gradient_norms`` reports, by name, in registration order.

    For a diffusion model the names are relative to its U-Net (``embed_noise``, ``encoder.stem``,
    ``encoder.blocks.0``, ``encoder.attentions.1``, ``encoder.downsamples.0``, ``middle.0`` ..
    ``middle.2``, ``decoder.blocks.0``, ``decoder.upsamples.0``, ``decoder.out_norm``,
    ``decoder.out_conv``), plus ``text_encoder`` when it has one; for an autoencoder, relative to the
    model (``encoder.*``, ``to_latent``, ``from_latent``, ``decoder.*``). Blocks without trainable
    parameters (identity attention slots, a frozen autoencoder) are left out.
    """
    roots = model.gradient_roots().items()
    blocks: dict[str, nn.Module] = {}

    def split(prefix: str, module: nn.Module) -> None:
        if prefix and not isinstance(module, _CONTAINERS):
            if any(p.requires_grad for p in module.parameters()):
                blocks[prefix] = module
            return
        for name, child in module.named_children():
            split(f"{prefix}.{name}" if prefix else name, child)

    for prefix, root in roots:
        split(prefix, root)
    return blocks


def _direct_parameters(model: nn.Module, blocks: dict[str, nn.Module]) -> dict[str, nn.Parameter]:
    """Trainable parameters that belong to no block (e.g. a Gaussian VAE's ``log_sigma``)."""
    in_blocks = {id(p) for block in blocks.values() for p in block.parameters()}
    return {name: p for name, p in model.named_parameters() if p.requires_grad and id(p) not in in_blocks}


def gradient_norms(model: Model, batch: dict[str, Any], seed: int = 0) -> dict[str, float]:
    """L2 norm of the gradient of the training loss (``loss, _ = model(batch)``, in training mode) in each
    block of ``network_blocks``, in the order the forward pass first runs them, then any loose
    parameters by name (e.g. ``log_sigma``). One forward and backward pass; the loss's randomness is
    drawn from ``seed`` without disturbing the global RNG.

    batch: the training batch dict ({"images": [N, C, S, S] in [-1, 1], "labels", "captions"}), on the
    model's device. Afterwards the parameters' ``.grad`` and ``model.training`` are what they were.
    """
    blocks = network_blocks(model)
    loose = _direct_parameters(model, blocks)
    order: list[str] = []
    hooks = [
        block.register_forward_pre_hook(lambda module, args, name=name: order.append(name))
        for name, block in blocks.items()
    ]
    parameters = [p for p in model.parameters() if p.requires_grad]
    saved_grads = [p.grad for p in parameters]
    was_training = model.training
    device = model_device(model)
    try:
        for p in parameters:
            p.grad = None
        model.train()
        cuda = (
            [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        )
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            loss, _ = model(batch)
            loss.backward()
        # Network order: blocks as the forward pass first reached them; blocks it never ran, after.
        ranked = list(dict.fromkeys(order)) + [name for name in blocks if name not in order]
        norms = {}
        for name in ranked:
            grads = [p.grad for p in blocks[name].parameters() if p.grad is not None]
            norms[name] = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        for name, p in loose.items():
            norms[name] = float(p.grad.double().norm()) if p.grad is not None else 0.0
    finally:
        for hook in hooks:
            hook.remove()
        for p, grad in zip(parameters, saved_grads, strict=True):
            p.grad = grad
        model.train(was_training)
    return norms

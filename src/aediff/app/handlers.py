"""The plain Python functions behind each tab of `aediff serve`: runs in, images and numbers out.

Nothing here imports Gradio, so every function is testable without a browser; ``aediff.app.page`` wires
them to the page and turns an ``AediffError`` into a message on the page. What a model can do is asked
with ``model.can(Capability.X)``; no family name is read.

Images are [N, C, H, W] in [-1, 1] inside, PIL images outside (enlarged for display). A request reads no
file outside the run folders and report folders the server was started with, and the file a user uploads.
"""

from __future__ import annotations

import html
import math
import queue
import re
import threading
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from aediff import load
from aediff.app.limits import (
    MAX_COUNT,
    MAX_INTERPOLATION_FRAMES,
    MAX_MAP_POINTS,
    MAX_SEED,
    MAX_STEPS,
    InputError,
    channel_note,
    check_whole,
    image_to_tensor,
    read_upload,
    tensor_to_image,
)
from aediff.diffusion.samplers import SamplerOptions, run_sampler
from aediff.errors import RunError
from aediff.models import Capability, Corruption
from aediff.requests import SamplingRequest, parse_sampling
from aediff.runs import CONFIG_FILE, Run

DEFAULT = "(run's default)"  # the sampler choice that keeps the run's own
TRAJECTORY_ROWS = 4  # images whose x_t and predicted x0 are streamed while sampling
STRIP_FRAMES = 10  # frames in the trajectory strip shown when sampling ends
DDIM_INVERSION_NOTE = (
    "DDIM inversion is not in aediff yet, so a diffusion model interpolates between two seeds (spherical "
    "interpolation of their starting noise, then deterministic sampling), not between two given images."
)
TRAIN_HINT = (
    "No runs loaded. Train one, e.g. `aediff train vae --data digits --out runs/vae --max-time 1m`, then "
    "`aediff serve runs`; or train a small VAE on `digits` here, in the background."
)


# --- the runs a server offers ---------------------------------------------------------------------------
def is_hub_spec(path: str | Path) -> bool:
    """``hf://owner/name[@revision]`` (a Path collapses the "//"): a run on the Hugging Face Hub."""
    return str(path).startswith("hf:/")


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders among ``paths``: each is a run folder itself, a folder whose children are (snapshots
    are not listed), or a Hub spec (kept as it is; ``load`` resolves it). RunError for a path that does not
    exist."""
    found = []
    for path in paths:
        if is_hub_spec(path):
            found.append(path)
        elif not path.exists():
            raise RunError(f"{path} does not exist; give run folders or a folder of runs (`aediff train --out`)")
        elif (path / CONFIG_FILE).is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if (p / CONFIG_FILE).is_file())
        else:
            raise RunError(f"{path} is not a run folder or a folder of runs")
    return found


@dataclass
class MapCache:
    coords: np.ndarray  # [N, 2] map coordinates
    codes: torch.Tensor  # [N, *latent_shape]
    labels: np.ndarray  # [N]
    indices: np.ndarray  # [N] test-split indices
    limits: tuple[float, float, float, float]  # x0, x1, y0, y1 of the drawn map
    size: tuple[int, int]  # width, height of the map image in pixels


@dataclass
class Catalog:
    """The loaded runs by name, the report folders a user may open, and where a new run is trained."""

    runs: dict[str, Run] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)
    train_dir: Path = Path("runs")
    train_steps: int = 600  # steps of the small VAE trained from the page (about a minute on two CPU cores)
    _datasets: dict[tuple[str, str], Any] = field(default_factory=dict)
    _maps: dict[tuple[str, str], MapCache] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, paths: list[Path], reports: list[Path] | None = None, device: str = "cpu") -> Catalog:
        """Load every run under ``paths``; report folders must hold a report.html (RunError otherwise)."""
        catalog = cls()
        for path in find_runs(paths):
            hub_name = str(path).split("/")[-1].split("@")[0] if is_hub_spec(path) else None
            catalog.add(load(path, device=device), hub_name)
        for folder in reports or []:
            if not (folder / "report.html").is_file():
                raise RunError(f"{folder} has no report.html; give the folder `aediff compare --out` wrote")
            catalog.reports[folder.name if folder.name not in catalog.reports else str(folder)] = folder.resolve()
        folders = [p for p in paths if not is_hub_spec(p) and p.is_dir() and not (p / CONFIG_FILE).is_file()]
        catalog.train_dir = folders[0] if folders else Path("runs")
        return catalog

    def add(self, run: Run, name: str | None = None) -> str:
        """List ``run`` under ``name`` (default: its folder's name; a Hub run: the repository's name), made
        unique with its parent folder's name."""
        name = name or run.name
        name = name if name not in self.runs else f"{run.path.parent.name}/{name}"
        self.runs[name] = run
        return name

    def names(self, *capabilities: Capability) -> list[str]:
        """Runs whose model can any of ``capabilities`` (all runs when none given)."""
        return [n for n, r in self.runs.items() if not capabilities or any(r.model.can(c) for c in capabilities)]

    def get(self, name: str | None) -> Run:
        if not self.runs:
            raise InputError(TRAIN_HINT)
        if not name or name not in self.runs:
            raise InputError(f"pick a run from the list (one of {', '.join(self.runs)}), got {name!r}")
        return self.runs[name]

    def dataset(self, run: Run, split: str = "test") -> Any:
        """The ``split`` of the run's training data (cached); InputError when the run records none."""
        if run.data is None:
            raise InputError(f"{run.path} records no dataset, so it has no test split to map")
        key = (str(run.path), split)
        with self._lock:
            if key not in self._datasets:
                self._datasets[key] = run.data.load_by_position(split)  # streaming mode: the split's first images
            return self._datasets[key]


def describe(catalog: Catalog) -> str:
    """One line per run: name, family, what it can do."""
    if not catalog.runs:
        return TRAIN_HINT
    lines = []
    for name, run in catalog.runs.items():
        abilities = ", ".join(sorted(c.value for c in run.model.capabilities))
        steps = f", {run.summary.steps} training steps" if run.summary is not None else ""
        shape = "x".join(map(str, run.model.image_shape))
        lines.append(f"- **{name}**: {run.family}, images {shape}{steps} ({abilities})")
    return "\n".join(lines)


# --- Generate -----------------------------------------------------------------------------------------
@dataclass
class GenerateRequest:
    run: str
    class_index: str | None = None
    negative_class: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    sampler: str | None = DEFAULT
    steps: float = 20
    guidance: str | None = None
    seed: float = 0
    count: float = 16


def sampling_request(run: Run, request: GenerateRequest, count: int) -> SamplingRequest:
    """The condition and sampler options of a Generate request, parsed by the parser the command line uses
    (``aediff.requests``); the page's own cap on steps first. No sampler options for a model without one (the
    page always sends its sampler and steps fields)."""
    model = run.model
    sampling = model.can(Capability.DIFFUSION_SAMPLER)
    steps = check_whole(request.steps, "steps", 1, MAX_STEPS) if sampling else None
    return parse_sampling(
        model, count, class_=request.class_index, negative_class=request.negative_class, prompt=request.prompt,
        negative_prompt=request.negative_prompt, guidance=request.guidance, steps=steps,
        sampler=None if not sampling or request.sampler == DEFAULT else request.sampler,
    )  # fmt: skip


Frame = tuple[Image.Image | None, Image.Image | None, str]


def generate(catalog: Catalog, request: GenerateRequest) -> Iterator[Frame]:
    """Yields (grid or None, trajectory frame or None, status text): one frame per sampler step while a
    diffusion model samples (x_t above, its predicted x0 below, for the first images), then the grid and a
    strip of the whole path (image 1's x_t and x0 from high to low noise)."""
    run = catalog.get(request.run)
    model = run.model
    model.require(Capability.GENERATE, "Generate")
    count = check_whole(request.count, "count", 1, MAX_COUNT)
    seed = check_whole(request.seed, "seed", 0, MAX_SEED)
    parsed = sampling_request(run, request, count)
    generator = torch.Generator(model.device).manual_seed(seed)
    if not model.can(Capability.DIFFUSION_SAMPLER):  # an AE / VAE / DAE: from the prior or the fitted Gaussian
        images = model.sample(count, parsed.condition, None, generator)
        source = "its prior" if model.can(Capability.ELBO) else "a Gaussian fitted to its training latents"
        yield tensor_to_image(images), None, f"{count} images from {request.run} ({run.family}, {source}, seed {seed})"
        return
    plan = model.sampler_plan(parsed.options)
    frames: queue.Queue[Any] = queue.Queue()
    rows = min(count, TRAJECTORY_ROWS)
    show = model.output_images  # pixels as they are; a latent diffusion model's latents decoded

    def callback(state: dict[str, Any]) -> None:
        x = state["x"][:rows] / (1 + state["sigma"] ** 2) ** 0.5  # scaled to unit variance for display
        frames.put(("frame", state["i"], state["sigma"], show(x).cpu(), show(state["denoised"][:rows]).cpu()))

    def work() -> None:
        try:
            out = model.sample(count, parsed.condition, parsed.options, generator, callback)
            frames.put(("done", out.cpu()))
        except BaseException as exc:  # handed to the request's thread, which raises it
            frames.put(("error", exc))

    threading.Thread(target=work, daemon=True).start()
    path: list[tuple[torch.Tensor, torch.Tensor]] = []
    while True:
        item = frames.get()
        if item[0] == "error":
            raise item[1]
        if item[0] == "done":
            break
        _, i, sigma, noisy, clean = item
        path.append((noisy[0], clean[0]))
        frame = tensor_to_image(torch.cat([noisy, clean]), nrow=rows)
        yield None, frame, f"step {i + 1}/{plan.steps}, sigma {sigma:.3g} (top: x_t, bottom: predicted x0)"
    images = item[1]
    picks = np.unique(np.linspace(0, len(path) - 1, min(STRIP_FRAMES, len(path))).round().astype(int))
    strip = torch.stack([path[k][0] for k in picks] + [images[0]] + [path[k][1] for k in picks] + [images[0]])
    yield (
        tensor_to_image(images),
        tensor_to_image(strip, nrow=len(picks) + 1, side=96),
        f"{count} images from {request.run} ({plan.name}, {plan.steps} steps, seed {seed}); "
        "trajectory of image 1, left to right from high to low noise: x_t above, predicted x0 below",
    )


# --- Denoise ------------------------------------------------------------------------------------------
CORRUPTIONS = ("none", "gaussian", "mask")  # as is; Gaussian noise of std sigma; a share of pixels masked


@dataclass
class DenoiseResult:
    images: list[tuple[Image.Image, str]]  # (image, caption), the clean and corrupted input first
    table: list[list[Any]]  # [run, family, steps, PSNR dB, SSIM]
    text: str


def input_image(upload: str | Path | None, drawing: Image.Image | None) -> Image.Image:
    """The image of a Denoise request: the uploaded file, else the drawing (InputError with neither)."""
    if upload:
        return read_upload(upload)
    if drawing is not None:
        return drawing
    raise InputError("upload an image or draw one on the canvas first")


def drawing_to_image(drawing: Image.Image) -> Image.Image | None:
    """A canvas drawing -> a grayscale image, light strokes on black like the digits (a drawing on a light
    background is inverted); None when nothing was drawn."""
    rgba = drawing.convert("RGBA")
    gray = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("L")
    if gray.getextrema()[0] == gray.getextrema()[1]:
        return None  # a blank canvas
    return ImageOps.invert(gray) if np.asarray(gray).mean() > 127 else gray


def _metrics(out: torch.Tensor, clean: torch.Tensor) -> tuple[float, float]:
    from aediff.metrics.image import psnr, ssim

    return float(psnr(out.clamp(-1, 1), clean)[0]), float(ssim((out.clamp(-1, 1) + 1) / 2, (clean + 1) / 2)[0])


def _number(value: float) -> float | str:
    return round(value, 2) if math.isfinite(value) else "inf (identical)"


def denoise_all(
    catalog: Catalog,
    image: Image.Image,
    corruption: str = "gaussian",
    level: float = 0.3,
    steps: float = 10,
    seed: float = 0,
) -> DenoiseResult:
    """Corrupt ``image`` (or use it as it is) and let every loaded model that can denoise clean it: AE / VAE /
    DAE in one pass, a diffusion model in 1 step and in ``steps`` steps; PSNR (dB, range [-1, 1]) and SSIM
    (on [0, 1]) of each output against the clean image, at each model's own image size."""
    if corruption not in CORRUPTIONS:
        raise InputError(f"corruption must be one of {', '.join(CORRUPTIONS)}, got {corruption!r}")
    steps = check_whole(steps, "steps", 1, MAX_STEPS)
    seed = check_whole(seed, "seed", 0, MAX_SEED)
    top = 2 if corruption == "gaussian" else 1
    if corruption != "none" and not (isinstance(level, int | float) and 0 < level <= top):
        bound = "(0, 2] (pixels span [-1, 1])" if corruption == "gaussian" else "(0, 1] (the share of pixels)"
        raise InputError(f"the {corruption} level must be in {bound}, got {level!r}")
    names = catalog.names(Capability.DENOISE)
    if not names:
        raise InputError("no loaded run can denoise; start the server with an AE, VAE, DAE or diffusion run")
    spec = None if corruption == "none" else f"{corruption}:{float(level)}"
    images: list[tuple[Image.Image, str]] = []
    table: list[list[Any]] = []
    skipped = []
    shown_inputs: set[tuple[int, int, int]] = set()
    for name in names:
        model = catalog.runs[name].model
        family = catalog.runs[name].family
        clean = image_to_tensor(image, model.image_shape).to(model.device)
        generator = torch.Generator(model.device).manual_seed(seed)
        noisy = clean if spec is None else Corruption.parse(spec)(clean, generator)
        if model.image_shape not in shown_inputs:
            shown_inputs.add(model.image_shape)
            images.append((tensor_to_image(clean), "clean"))
            images.append((tensor_to_image(noisy.clamp(-1, 1)), f"input ({spec or 'as is'})"))
            p, s = _metrics(noisy, clean)
            table.append(["(the input)", "-", 0, _number(p), round(s, 3)])
        with torch.no_grad():
            if model.can(Capability.NOISE_LEVEL):
                if corruption != "gaussian":
                    skipped.append(f"{name} (a diffusion model removes Gaussian noise of a known level)")
                    continue
                outputs = [(1, model.denoise(noisy, sigma=float(level), steps=1))]
                if steps > 1:
                    outputs.append((steps, model.denoise(noisy, sigma=float(level), steps=steps)))
            else:
                outputs = [(1, model.denoise(noisy))]
        for n, out in outputs:
            p, s = _metrics(out, clean)
            label = f"{name} ({family}, {n} step{'s' if n > 1 else ''}): PSNR {_number(p)} dB, SSIM {s:.3f}"
            images.append((tensor_to_image(out), label))
            table.append([name, family, n, _number(p), round(s, 3)])
    text = f"{len(table) - len(shown_inputs)} outputs against the clean image."
    note = channel_note(image, {name: catalog.runs[name].model.image_shape[0] for name in names})
    text += f" {note}" if note else ""
    if skipped:
        text += " Skipped: " + "; ".join(skipped) + " - choose gaussian noise to include them."
    return DenoiseResult(images, table, text)


# --- Explore: the latent map ----------------------------------------------------------------------------
MAP_METHODS = ("pca", "umap")
MAP_PIXELS = 480  # the map image is MAP_PIXELS x MAP_PIXELS


def _map_cache(catalog: Catalog, name: str, method: str) -> MapCache:
    from aediff.evaluation.latents import latent_codes, latent_map

    if method not in MAP_METHODS:
        raise InputError(f"map method must be pca or umap, got {method!r}")
    run = catalog.get(name)
    run.model.require(Capability.LATENT, "the latent map")
    key = (name, method)
    if key in catalog._maps:
        return catalog._maps[key]
    dataset = catalog.dataset(run)
    limit = min(len(dataset), MAX_MAP_POINTS)
    codes, labels = latent_codes(run.model, dataset, limit=limit, flatten=False)
    coords = latent_map(codes.reshape(len(codes), -1), method)
    from aediff.evaluation.protocols import spread_indices

    indices = np.asarray(spread_indices(len(dataset), limit))
    x0, y0 = coords.min(0)
    x1, y1 = coords.max(0)
    pad_x, pad_y = 0.05 * (x1 - x0 or 1), 0.05 * (y1 - y0 or 1)
    cache = MapCache(
        coords, torch.from_numpy(codes), labels, indices, (x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y),
        (MAP_PIXELS, MAP_PIXELS),
    )  # fmt: skip
    catalog._maps[key] = cache
    return cache


def latent_map_image(catalog: Catalog, name: str, method: str = "pca") -> tuple[Image.Image, str]:
    """The test split's codes on a 2-D map coloured by class (class numbers at their centroids)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cache = _map_cache(catalog, name, method)
    width, height = cache.size
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    x0, x1, y0, y1 = cache.limits
    axes.set_xlim(x0, x1)
    axes.set_ylim(y0, y1)
    axes.scatter(cache.coords[:, 0], cache.coords[:, 1], c=cache.labels, cmap="tab10", s=12, vmin=0, vmax=9)
    for label in np.unique(cache.labels):
        if label >= 0:
            cx, cy = cache.coords[cache.labels == label].mean(0)
            axes.text(cx, cy, str(label), fontsize=14, weight="bold", ha="center", va="center")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    buffer = np.asarray(canvas.buffer_rgba())[..., :3]
    text = (
        f"{len(cache.coords)} test images of {name} on a {method.upper()} map of their latent codes, "
        "coloured by class. Click a point to decode it."
    )
    return Image.fromarray(buffer.copy()), text


def map_point(catalog: Catalog, name: str, method: str, x: float, y: float) -> tuple[Image.Image, str]:
    """The test image nearest to pixel (x, y) of the map, beside the decoding of its code."""
    cache = _map_cache(catalog, name, method)
    width, height = cache.size
    if x is None or y is None or not (0 <= x <= width and 0 <= y <= height):
        raise InputError(f"click inside the map (pixels 0..{width} x 0..{height}), got ({x}, {y})")
    x0, x1, y0, y1 = cache.limits
    pixels = np.stack(
        [(cache.coords[:, 0] - x0) / (x1 - x0) * width, (y1 - cache.coords[:, 1]) / (y1 - y0) * height], 1
    )
    nearest = int(np.argmin(((pixels - [x, y]) ** 2).sum(1)))
    run = catalog.get(name)
    index = int(cache.indices[nearest])
    original = catalog.dataset(run).batch(torch.tensor([index]))["images"]
    with torch.no_grad():
        decoded = run.model.decode(cache.codes[nearest : nearest + 1].to(run.model.device)).clamp(-1, 1).cpu()
    text = f"test image {index} (class {int(cache.labels[nearest])}): the original, left; its code decoded, right"
    return tensor_to_image(torch.cat([original, decoded]), nrow=2, side=128), text


# --- Explore: interpolation -----------------------------------------------------------------------------
def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of a, b [1, ...] at t [T] (Shoemake 1985): [T, ...]; linear when they are
    parallel. Keeps the norm of Gaussian noise, so every point is a plausible starting noise."""
    flat_a, flat_b = a.flatten().double(), b.flatten().double()
    cos = torch.dot(flat_a, flat_b) / (flat_a.norm() * flat_b.norm())
    omega = torch.arccos(cos.clamp(-1, 1))
    t = t.double()[:, None]
    if omega.abs() < 1e-6:
        mixed = (1 - t) * flat_a + t * flat_b
    else:
        mixed = (torch.sin((1 - t) * omega) * flat_a + torch.sin(t * omega) * flat_b) / torch.sin(omega)
    return mixed.to(a.dtype).reshape(len(t), *a.shape[1:])


def _seeded(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def _diffusion_path(run: Run, seed_a: int, seed_b: int, t: torch.Tensor) -> torch.Tensor:
    """Deterministic samples from slerped starting noise of two seeds (the run's sampler, or dpm++ when that
    draws fresh noise), [T, C, H, W]."""
    model = run.model
    plan = model.sampler_plan(None)
    if plan.stochastic:
        plan = model.sampler_plan(SamplerOptions(sampler="dpm++", steps=plan.steps))
    sigmas = model.sampling_sigmas(plan)
    noise = [
        torch.randn((1, *model.space_shape), generator=_seeded(model.device, s), device=model.device)
        for s in (seed_a, seed_b)
    ]
    x = sigmas[0] * slerp(noise[0], noise[1], t.to(model.device))
    with torch.no_grad():
        out = run_sampler(plan, model.guided_denoiser(len(t), None), x, sigmas)
        return model.output_images(out).cpu()


def interpolate(
    catalog: Catalog, name: str, a: float, b: float, t: float = 0.5, frames: float = 8
) -> tuple[Image.Image, Image.Image, str]:
    """(the path in ``frames`` images, the image at ``t``, text). An AE / VAE / DAE: a straight line between
    the codes of test images ``a`` and ``b``, decoded. A diffusion model: seeds ``a`` and ``b``' starting
    noise, slerped (see DDIM_INVERSION_NOTE)."""
    run = catalog.get(name)
    model = run.model
    frames = check_whole(frames, "frames", 2, MAX_INTERPOLATION_FRAMES)
    if t is None or not 0 <= float(t) <= 1:
        raise InputError(f"t must be in [0, 1], got {t!r}")
    ts = torch.cat([torch.linspace(0, 1, frames), torch.tensor([float(t)])])
    if model.can(Capability.LATENT):
        dataset = catalog.dataset(run)
        a, b = (check_whole(v, f"image {k}", 0, len(dataset) - 1) for k, v in (("A", a), ("B", b)))
        x = dataset.batch(torch.tensor([a, b]))["images"].to(model.device)
        with torch.no_grad():
            z = model.encode(x)
            weights = ts.to(z.device).reshape(-1, *([1] * (z.dim() - 1)))
            path = model.decode((1 - weights) * z[:1] + weights * z[1:]).clamp(-1, 1).cpu()
        text = f"linear in the latent from test image {a} to {b}"
    elif model.can(Capability.DIFFUSION_SAMPLER):
        a, b = (check_whole(v, f"seed {k}", 0, MAX_SEED) for k, v in (("A", a), ("B", b)))
        path = _diffusion_path(run, a, b, ts)
        text = f"slerp of the starting noise of seeds {a} and {b}. {DDIM_INVERSION_NOTE}"
    else:
        raise InputError(f"{name} can neither encode images nor sample with a diffusion sampler: pick another run")
    return tensor_to_image(path[:-1], nrow=frames, side=96), tensor_to_image(path[-1:], side=192), text


# --- Report ----------------------------------------------------------------------------------------------
_IMG_SRC = re.compile(r"""(<img\b[^>]*?\bsrc=)(["'])([^"']+)\2""", re.IGNORECASE)
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml", ".gif": "image/gif"}


def report_html(catalog: Catalog, name: str | None) -> str:
    """A report folder's report.html with its figures inlined (only files inside that folder), in a sandboxed
    iframe so that its styles and scripts stay its own."""
    if not catalog.reports:
        raise InputError("no report folder was given; start the server with `--report REPORT_DIR`")
    if not name or name not in catalog.reports:
        raise InputError(f"pick a report from the list (one of {', '.join(catalog.reports)}), got {name!r}")
    folder = catalog.reports[name]
    page = (folder / "report.html").read_text(encoding="utf-8", errors="replace")

    def inline(match: re.Match[str]) -> str:
        source = match.group(3)
        if source.startswith(("data:", "http:", "https:", "//")):
            return match.group(0)
        path = (folder / source).resolve()
        if not path.is_relative_to(folder) or not path.is_file() or path.suffix.lower() not in _MIME:
            return match.group(0)  # left as it is: nothing outside the folder is read
        data = b64encode(path.read_bytes()).decode()
        return f"{match.group(1)}{match.group(2)}data:{_MIME[path.suffix.lower()]};base64,{data}{match.group(2)}"

    page = _IMG_SRC.sub(inline, page)
    return (
        f'<iframe title="report {html.escape(name)}" sandbox="allow-scripts" '
        f'style="width:100%;height:80vh;border:1px solid #ccc" srcdoc="{html.escape(page, quote=True)}"></iframe>'
    )


# --- Training a first run -------------------------------------------------------------------------------
def train_small(catalog: Catalog, progress: Callable[[float, str], None]) -> str:
    """Train a small VAE on `digits` into the catalog's train folder, reporting progress (fraction, text);
    load it and return its name."""
    from aediff import train

    max_steps = catalog.train_steps
    catalog.train_dir.mkdir(parents=True, exist_ok=True)
    out = catalog.train_dir / "digits-vae"
    k = 1
    while out.exists():
        k += 1
        out = catalog.train_dir / f"digits-vae-{k}"

    def report(trainer: Any, step: int, logs: dict[str, float]) -> None:
        progress(min(step / max_steps, 1.0), f"step {step}/{max_steps}, loss {logs.get('loss', float('nan')):.4g}")

    train(
        "vae",
        out,
        "digits",
        model={"channels": (8, 16), "bottleneck_dim": 8},
        training={"max_steps": max_steps, "batch_size": 64, "tensorboard": False},
        progress=False,
        callbacks=[report],
    )
    return catalog.add(load(out, device="cpu"))

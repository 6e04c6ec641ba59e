"""Samplers: plain functions of a denoiser and a list of noise levels (k-diffusion's convention).

Every sampler has the signature ``sampler(denoiser, x, sigmas, callback=None, generator=None, **options)``:
- denoiser(x, sigma) -> the x0 estimate (``aediff.diffusion.parameterization.Denoiser``);
- x: the starting point x = sigmas[0] * noise, [N, C, S, S] (variance-exploding view);
- sigmas: decreasing noise levels [n + 1], usually ending in 0;
- generator: the source of any fresh noise (ddpm, ddim with eta > 0, euler / heun with s_churn > 0);
- options: the sampler's own keywords (``eta``, ``s_churn``), checked by ``SamplerOptions.resolve``.
It returns the final sample. The DDPM and DDIM steps are also given in DDPM's own variables
(``ddpm_step``, ``ddim_step``) so they can be checked against reference implementations.

Trajectories, one convention for every sampler: ``callback({"i": i, "sigma": sigma_i, "x": x_i,
"denoised": D(x_i, sigma_i)})`` is called BEFORE step i, once per step (n frames for sigmas [n + 1]),
where x_i is the variance-exploding state at noise level sigma_i, i.e. exactly the (x, sigma) the
denoiser is first called with at step i; ``sigma`` is a float. With stochastic churn (Karras et al. 2022,
Algorithm 2) that first call is at the raised level sigma_hat = sigma_i (1 + gamma) on the churned x,
so the frame reports that pair: x, sigma and denoised always belong together.

``SAMPLERS`` declares each sampler (``SamplerSpec``: whether it draws noise, its network evaluations; its
options are its function's keywords); ``SamplerOptions`` is what a user chooses, checked once by ``resolve``
with messages a user can act on into a ``SamplerPlan``, and ``run_sampler(plan, ...)`` is the one way to run
it: model -> plan -> sigmas -> run_sampler -> the sampler function.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from aediff.diffusion.diffusers_schedulers import PREFIX, SCHEDULERS, UNFIT, NoiseGrid, SchedulerEntry
from aediff.diffusion.diffusers_schedulers import sample_with_scheduler as _sample_with_scheduler
from aediff.errors import ConfigError

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict[str, Any]], None] | None


# --- single steps in DDPM's variance-preserving variables --------------------------------------------
def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_t: torch.Tensor | float,
    alpha_bar_prev: torch.Tensor | float,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM step x_t -> x_prev (Song et al. 2021, eq. 12), given the predicted noise (and the x0
    estimate it came from, when known: recomputing it from eps cancels catastrophically in float32 where
    abar_t is tiny).

    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z, with
    s = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev); eta = 1 is DDPM.
    """
    alpha_bar_t, alpha_bar_prev = torch.as_tensor(alpha_bar_t), torch.as_tensor(alpha_bar_prev)
    if x0 is None:
        x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    std = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()
    x_prev = alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev - std**2).clamp_min(0).sqrt() * eps
    if eta > 0:
        x_prev = x_prev + std * (noise if noise is not None else torch.randn_like(x_t))
    return x_prev


def ddpm_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_t: torch.Tensor | float,
    alpha_bar_prev: torch.Tensor | float,
    noise: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """One ancestral DDPM step x_t -> x_prev (Ho et al. 2020, eqs. 6-7), variance beta-tilde ("fixed small");
    ``x0`` as in ``ddim_step``.

    With beta = 1 - abar_t / abar_prev (a strided step's effective beta):
    mean = sqrt(abar_prev) beta / (1 - abar_t) x0 + sqrt(1 - beta) (1 - abar_prev) / (1 - abar_t) x_t,
    variance = (1 - abar_prev) / (1 - abar_t) beta. No noise is added on the last step (abar_prev = 1).
    """
    alpha_bar_t, alpha_bar_prev = torch.as_tensor(alpha_bar_t), torch.as_tensor(alpha_bar_prev)
    beta = 1 - alpha_bar_t / alpha_bar_prev
    if x0 is None:
        x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    mean = (alpha_bar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - alpha_bar_prev) * x_t) / (1 - alpha_bar_t)
    variance = ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta).clamp_min(1e-20)
    if float(alpha_bar_prev) < 1.0:
        mean = mean + variance.sqrt() * (noise if noise is not None else torch.randn_like(x_t))
    return mean


def _vp_step(
    step: Callable[..., torch.Tensor],
    x: torch.Tensor,
    denoised: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    generator: torch.Generator | None,
    **kw: Any,
) -> torch.Tensor:
    """Run a DDPM-variable step from the variance-exploding x: x_t = x * sqrt(abar), abar = 1/(1+sigma^2)."""
    alpha_bar, alpha_bar_next = 1 / (1 + sigma.double() ** 2), 1 / (1 + sigma_next.double() ** 2)
    eps = (x - denoised) / sigma
    # Drawn at every step, even when the step ignores it (ddim, eta = 0), so the generator's stream is the
    # same whatever eta is.
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    x_t = x * alpha_bar.sqrt().float()
    x_prev = step(x_t, eps, alpha_bar.float(), alpha_bar_next.float(), noise=noise, x0=denoised, **kw)
    return x_prev / alpha_bar_next.sqrt().float()


def _report(callback: Callback, i: int, sigma: torch.Tensor, x: torch.Tensor, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "sigma": float(sigma), "x": x, "denoised": denoised})


# --- samplers ------------------------------------------------------------------------------------------
def _walk_vp(
    step: Callable[..., torch.Tensor],
    denoiser: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback,
    generator: torch.Generator | None,
    **kw: Any,
) -> torch.Tensor:
    """Walk ``sigmas`` with a DDPM-variable step; each frame is reported before its step (module docstring)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, sigmas[i], x, denoised)
        x = _vp_step(step, x, denoised, sigmas[i], sigmas[i + 1], generator, **kw)
    return x


@torch.no_grad()
def sample_ddpm(
    denoiser: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020) along ``sigmas``; one network evaluation per step."""
    return _walk_vp(ddpm_step, denoiser, x, sigmas, callback, generator)


@torch.no_grad()
def sample_ddim(
    denoiser: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM (Song et al. 2021): deterministic for eta = 0 (then it equals Euler on the probability-flow
    ODE in sigma), DDPM-like for eta = 1."""
    return _walk_vp(ddim_step, denoiser, x, sigmas, callback, generator, eta=eta)


def _churn(
    x: torch.Tensor, sigmas: torch.Tensor, i: int, s_churn: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Karras et al. 2022, Algorithm 2, lines 4-6: raise the noise level of x from sigma_i to
    sigma_hat = sigma_i (1 + gamma) with fresh noise, gamma = min(s_churn / n, sqrt(2) - 1), at every step
    (S_tmin = 0, S_tmax = inf, S_noise = 1; as k-diffusion's ``sample_euler`` / ``sample_heun``).

    Returns (x_hat, sigma_hat); with s_churn = 0 x and sigmas[i] themselves, untouched and with no noise drawn,
    so that the deterministic samplers stay bit-identical and leave the generator alone.
    """
    gamma = min(s_churn / (len(sigmas) - 1), math.sqrt(2) - 1)
    if gamma <= 0:
        return x, sigmas[i]
    sigma_hat = sigmas[i] * (1 + gamma)
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    return x + (sigma_hat**2 - sigmas[i] ** 2).sqrt() * noise, sigma_hat


@torch.no_grad()
def sample_euler(
    denoiser: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    generator: torch.Generator | None = None,
    s_churn: float = 0.0,
) -> torch.Tensor:
    """Euler steps of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022);
    with s_churn > 0, Algorithm 2's stochastic churn before each step (then an SDE-like sampler)."""
    for i in range(len(sigmas) - 1):
        x, sigma = _churn(x, sigmas, i, s_churn, generator)
        denoised = denoiser(x, sigma)
        _report(callback, i, sigma, x, denoised)
        x = x + (sigmas[i + 1] - sigma) * (x - denoised) / sigma
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    generator: torch.Generator | None = None,
    s_churn: float = 0.0,
) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1; Algorithm 2 with s_churn > 0):
    2n - 1 evaluations when sigmas ends in 0 (the last step is Euler's)."""
    for i in range(len(sigmas) - 1):
        x, sigma = _churn(x, sigmas, i, s_churn, generator)
        denoised = denoiser(x, sigma)
        _report(callback, i, sigma, x, denoised)
        slope = (x - denoised) / sigma
        x_next = x + (sigmas[i + 1] - sigma) * slope
        if sigmas[i + 1] > 0:
            slope_next = (x_next - denoiser(x_next, sigmas[i + 1])) / sigmas[i + 1]
            x_next = x + (sigmas[i + 1] - sigma) * (slope + slope_next) / 2
        x = x_next
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep second order in lambda = -ln(sigma); one evaluation
    per step. Follows k-diffusion's ``sample_dpmpp_2m``."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, sigmas[i], x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            break
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is not None:
            r = (t - (-sigmas[i - 1].log())) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        else:
            denoised_d = denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_consistency(
    denoiser: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): jump to the x0 estimate, then restart at
    the next level with fresh noise, x = D + sigma_next * z. One evaluation per step. For a consistency-distilled
    student (``aediff distill --method consistency``), whose D maps any level straight to the data; a plain
    diffusion model's one-jump estimates are blurry."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, sigmas[i], x, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            x = denoised + sigmas[i + 1] * noise
    return x


# --- declarations ----------------------------------------------------------------------------------------
# The arguments every sampler takes before its own keyword options (module docstring).
_COMMON_ARGUMENTS = ("denoiser", "x", "sigmas", "callback", "generator")


def _always(kwargs: Mapping[str, float]) -> bool:
    return True


def _never(kwargs: Mapping[str, float]) -> bool:
    return False


def _eta_positive(kwargs: Mapping[str, float]) -> bool:
    return kwargs.get("eta", 0.0) > 0


def _churn_positive(kwargs: Mapping[str, float]) -> bool:
    return kwargs.get("s_churn", 0.0) > 0


def _one_per_step(steps: int) -> int:
    return steps


def _heun_evaluations(steps: int) -> int:
    # Two evaluations per step but the last: its sigma_next = 0 makes it an Euler step.
    return 2 * steps - 1


@dataclass(frozen=True)
class SamplerSpec:
    """What the rest of the package needs to know about a sampler, next to the function that runs it.

    name: its key in SAMPLERS and its value for --sampler; function: the sampler (module docstring), run only
    through ``run_sampler``; stochastic(its keyword options) -> whether it draws fresh noise, so that the
    generator changes the result; discrete_timesteps: it walks the schedule's own discrete levels (DDPM, DDIM)
    rather than Karras spacing; open_grid: it restarts at every level but the last, so its levels are the Karras
    grid of steps + 1 without the smallest (which would only add noise of sigma_min); network_evaluations(steps)
    -> denoiser calls per sample (read it through ``evaluations``). The options it takes are read from the
    function's signature (``options``), so that adding one is a keyword on the function, a field of
    SamplerOptions and its range in ``_OPTION_RANGES``.
    scheduler: for ``diffusers:NAME``, the diffusers scheduler that walks instead of ``function`` (no options of
    its own; diffusers_schedulers.py).
    """

    name: str
    function: Callable[..., torch.Tensor] | None
    stochastic: Callable[[Mapping[str, float]], bool] = _never
    discrete_timesteps: bool = False
    network_evaluations: Callable[[int], int] = field(default=_one_per_step, repr=False)
    scheduler: SchedulerEntry | None = None
    open_grid: bool = False

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options ``function`` takes after the common arguments, e.g. ("eta",)."""
        if self.function is None:
            return ()
        names = tuple(inspect.signature(self.function).parameters)
        assert names[: len(_COMMON_ARGUMENTS)] == _COMMON_ARGUMENTS, f"{self.name}: {names}"
        return names[len(_COMMON_ARGUMENTS) :]

    def evaluations(self, steps: int) -> int:
        """Network evaluations per sample for ``steps`` steps along sigmas [steps + 1] ending in 0, without
        guidance (classifier-free guidance evaluates twice per call, doubling it)."""
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        return self.network_evaluations(steps)


def _flag(option: str) -> str:
    """An option's command-line spelling: s_churn -> --s-churn."""
    return "--" + option.replace("_", "-")


def _enumerate(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


# Each option's valid values, as (test, what the message asks for); the keys are SamplerOptions' option fields.
_OPTION_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "eta": (lambda v: 0 <= v <= 1, "between 0 (deterministic) and 1 (DDPM-like)"),
    "s_churn": (lambda v: 0 <= v < math.inf, "a finite number >= 0 (0: deterministic)"),
}


def _checked_options(spec: SamplerSpec, values: dict[str, Any]) -> dict[str, float]:
    """The options set in ``values`` (None: unset), each checked to be one ``spec`` takes and in range
    (ConfigError otherwise)."""
    checked = {}
    for option, value in values.items():
        if value is None:
            continue
        if option not in spec.options:
            takers = [other.name for other in SAMPLERS.values() if option in other.options]
            raise ConfigError(f"{_flag(option)} applies to {_enumerate(takers)}, not {spec.name}")
        in_range, wanted = _OPTION_RANGES[option]
        # `not in_range` rather than a negated comparison, so that NaN fails too.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not in_range(float(value)):
            raise ConfigError(f"{_flag(option)} must be {wanted}, got {value!r}")
        checked[option] = float(value)
    return checked


@dataclass(frozen=True)
class SamplerPlan:
    """A sampler choice checked and completed, ready for ``run_sampler``; ``SamplerOptions.resolve`` makes it.

    spec: the chosen sampler; steps: denoising steps >= 1 (sigmas [steps + 1]); kwargs: the keyword options
    given that ``spec.function`` takes, checked (an option left unset keeps the function's default); grid: the
    model's noise levels, which a diffusers scheduler is built on (None where no model planned it).
    """

    spec: SamplerSpec
    steps: int
    kwargs: Mapping[str, float] = field(default_factory=dict)
    grid: NoiseGrid | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stochastic(self) -> bool:
        """Whether sampling draws fresh noise, so that the generator changes the result."""
        return self.spec.stochastic(self.kwargs)

    @property
    def evaluations(self) -> int:
        """Network evaluations per sample (without guidance)."""
        return self.spec.evaluations(self.steps)

    @property
    def options(self) -> SamplerOptions:
        """The choice as SamplerOptions with sampler and steps filled in (for the record, or to change one)."""
        return SamplerOptions(sampler=self.name, steps=self.steps, **self.kwargs)


@dataclass(frozen=True)
class SamplerOptions:
    """What a user chooses about sampling; None = the model's default (sampler, steps) or the sampler's own
    (eta = 0, s_churn = 0: deterministic).

    sampler: one of SAMPLER_NAMES; steps: denoising steps >= 1 (so sigmas [steps + 1]);
    eta (ddim): the noise of each step, in [0, 1]: 0 deterministic .. 1 DDPM-like (Song et al. 2021, eq. 16);
    s_churn (euler, heun): stochastic churn >= 0 (Karras et al. 2022, Algorithm 2), 0 = deterministic.
    ``resolve`` fills the defaults and checks everything once, giving the SamplerPlan that runs.
    """

    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    s_churn: float | None = None

    def resolve(self, default_sampler: str, default_steps: int, grid: NoiseGrid | None = None) -> SamplerPlan:
        """The plan with sampler and steps filled from the defaults, checked: ConfigError for an unknown
        sampler, steps < 1, an option the chosen sampler does not take, a value out of range, or a diffusers
        scheduler that ``grid`` (the model's noise levels) cannot drive."""
        sampler = self.sampler if self.sampler is not None else default_sampler
        steps = self.steps if self.steps is not None else default_steps
        spec = sampler_spec(sampler)
        if spec is None:
            raise ConfigError(_unknown_sampler(sampler))
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ConfigError(f"steps must be a whole number >= 1, got {steps!r}")
        if spec.scheduler is not None:
            if grid is None:
                raise ConfigError(f"--sampler {sampler} is built on a model's noise schedule; sample from a run")
            spec.scheduler.check(grid)
        values = {option: getattr(self, option) for option in _OPTION_RANGES}
        return SamplerPlan(spec, int(steps), _checked_options(spec, values), grid)


def _unknown_sampler(sampler: str) -> str:
    """The message for a --sampler that is not offered, with the reason where diffusers has it but aediff
    cannot drive it."""
    name = sampler.removeprefix(PREFIX)
    if sampler.startswith(PREFIX) and name in UNFIT:
        return f"--sampler {sampler} is not offered: {UNFIT[name]}"
    if sampler.startswith(PREFIX):
        return f"unknown diffusers scheduler {name!r}; choose one of {', '.join(DIFFUSERS_SAMPLER_NAMES)}"
    return (
        f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLER_NAMES)}, or a diffusers scheduler as "
        f"{PREFIX}NAME (aediff sample --help lists them)"
    )


def run_sampler(
    plan: SamplerPlan,
    denoiser: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run the sampler ``plan`` chose from x [N, C, S, S] along sigmas (usually [plan.steps + 1], ending in 0,
    as the model computes them for the plan): the one way a sampler is run. A diffusers scheduler walks its own
    levels on the plan's grid (x must start at the first of them, as ``sampling_sigmas`` gives)."""
    if plan.spec.scheduler is not None:
        assert plan.grid is not None, "resolve() refuses a diffusers plan without a grid"
        return _sample_with_scheduler(plan.spec.scheduler, plan.grid, plan.steps, denoiser, x, callback, generator)
    assert plan.spec.function is not None
    return plan.spec.function(denoiser, x, sigmas, callback=callback, generator=generator, **plan.kwargs)


def _diffusers_spec(entry: SchedulerEntry) -> SamplerSpec:
    return SamplerSpec(
        entry.sampler_name, None, stochastic=_always if entry.stochastic else _never,
        discrete_timesteps=entry.discrete_only, network_evaluations=entry.network_evaluations, scheduler=entry,
    )  # fmt: skip


SAMPLERS: dict[str, SamplerSpec] = {
    spec.name: spec
    for spec in (
        SamplerSpec("ddpm", sample_ddpm, stochastic=_always, discrete_timesteps=True),
        SamplerSpec("ddim", sample_ddim, stochastic=_eta_positive, discrete_timesteps=True),
        SamplerSpec("euler", sample_euler, stochastic=_churn_positive),
        SamplerSpec("heun", sample_heun, stochastic=_churn_positive, network_evaluations=_heun_evaluations),
        SamplerSpec("dpm++", sample_dpmpp_2m),
        SamplerSpec("consistency", sample_consistency, stochastic=_always, open_grid=True),
    )
}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)  # aediff.modes.SamplerName spells them; a test keeps both equal
# "diffusers:NAME": diffusers' schedulers, for --sampler (not a run's default sampler)
DIFFUSERS_SAMPLERS: dict[str, SamplerSpec] = {name: _diffusers_spec(entry) for name, entry in SCHEDULERS.items()}
DIFFUSERS_SAMPLER_NAMES: tuple[str, ...] = tuple(DIFFUSERS_SAMPLERS)


def sampler_spec(name: str) -> SamplerSpec | None:
    """The declaration of the sampler ``name``: one of aediff's or of diffusers' (None: neither)."""
    return SAMPLERS.get(name) or DIFFUSERS_SAMPLERS.get(name)

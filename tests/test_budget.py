"""A comparison's training budget in steps as well as wall clock (`aediff compare --budget 400steps`,
`--steps-per-family diffusion=400,ae=800`): the parser, the training each planned model is given, the
progress estimate, what the report states, and the refusals as a user types them."""

from __future__ import annotations

import math

import pytest

import aediff
from aediff.config import Budget, parse_budget
from aediff.errors import ConfigError
from aediff.evaluation.results import decode, encode
from aediff.reports.compare import (
    JUDGE_EPOCHS,
    STEP_FAMILIES,
    CompareConfig,
    Job,
    Progress,
    compare_plan,
    parse_family_steps,
    planned_jobs,
    training_overrides,
)
from aediff.reports.record import ReportMeta
from aediff.reports.training import budget_line
from test_cli_conventions import aediff as aediff_cli
from test_cli_conventions import error_lines

ACCEPTED = [
    ("400steps", Budget(steps=400), "400 steps per model"),
    ("400 steps", Budget(steps=400), "400 steps per model"),
    (" 400 STEPS ", Budget(steps=400), "400 steps per model"),
    ("1step", Budget(steps=1), "1 step per model"),
    ("1 step", Budget(steps=1), "1 step per model"),
    ("30s", Budget(minutes=0.5), "30 s of training per model"),
    ("90s", Budget(minutes=1.5), "90 s of training per model"),
    ("10m", Budget(minutes=10.0), "10 min of training per model"),
    ("10min", Budget(minutes=10.0), "10 min of training per model"),
    ("1h", Budget(minutes=60.0), "60 min of training per model"),
    ("2.5", Budget(minutes=2.5), "2.5 min of training per model"),  # a bare number is minutes, as before
]


@pytest.mark.parametrize("text,budget,described", ACCEPTED, ids=[t for t, _, _ in ACCEPTED])
def test_every_accepted_budget_form(text, budget, described):
    assert parse_budget(text) == budget
    assert budget.describe() == described


REFUSED = [
    ("0steps", "at least 1 step"),
    ("0 steps", "at least 1 step"),
    ("-5steps", "at least 1 step"),
    ("1.5steps", "not a whole number of steps"),
    ("steps", "not a whole number of steps"),
    ("many steps", "not a whole number of steps"),
    ("soon", "90s, 10m or 1.5h, or a step count such as 400steps"),
    ("400 st", "not a duration"),
    ("0", "positive, finite duration"),
    ("-1m", "positive, finite duration"),
    ("inf", "positive, finite duration"),
]


@pytest.mark.parametrize("text,message", REFUSED, ids=[t for t, _ in REFUSED])
def test_every_refused_budget_names_the_option_and_the_fix(text, message):
    with pytest.raises(ConfigError, match=message) as refused:
        parse_budget(text, "--budget")
    assert str(refused.value).startswith("--budget")


def test_a_budget_is_a_duration_or_a_step_count_exactly_one():
    for bad in ({}, {"minutes": 1.0, "steps": 5}):
        with pytest.raises(ConfigError, match="exactly one"):
            Budget(**bad)
    for bad, field in (({"steps": 0}, "budget.steps"), ({"minutes": 0.0}, "budget.minutes")):
        with pytest.raises(ConfigError, match=field):
            Budget(**bad)
    with pytest.raises(ConfigError, match="budget.minutes"):
        Budget(minutes=math.inf)


def test_steps_per_family_parses_and_refuses():
    assert parse_family_steps("diffusion=400,ae=800") == {"diffusion": 400, "ae": 800}
    assert parse_family_steps(" latent-diffusion = 5 steps ") == {"latent-diffusion": 5}
    for text, message in [
        ("diffusion", "FAMILY=STEPS"),
        ("=400", "FAMILY=STEPS"),
        ("diffusion=400,", "FAMILY=STEPS"),
        ("diffusion=0", "at least 1 step"),
        ("diffusion=-3", "at least 1 step"),
        ("diffusion=1.5", "not a whole number"),
        ("ae=3,ae=4", "twice"),
    ]:
        with pytest.raises(ConfigError, match=message) as refused:
            parse_family_steps(text)
        assert "--steps-per-family" in str(refused.value), text


def test_the_step_families_are_the_plans_families_but_the_judges():
    plan = compare_plan(CompareConfig())
    assert set(STEP_FAMILIES) == {p.family for p in plan if not p.judge}


def test_compare_config_refuses_what_a_step_budget_cannot_mean():
    with pytest.raises(ConfigError, match="--steps-per-family names gan.*ae, vae, dae, diffusion"):
        CompareConfig(family_steps={"gan": 3})
    with pytest.raises(ConfigError, match="judge classifier keeps its fixed epochs"):
        CompareConfig(family_steps={"classifier": 3})
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="whole step counts >= 1"):
            CompareConfig(family_steps={"ae": bad})
    with pytest.raises(ConfigError, match="--max-steps caps a wall-clock budget.*drop --max-steps"):
        CompareConfig(budget=Budget(steps=5), max_steps=3)
    CompareConfig(budget=Budget(minutes=1.0), max_steps=3, family_steps={"ae": 9})  # a cap on the time budget


def test_budget_minutes_still_sets_a_time_budget():
    assert CompareConfig(budget_minutes=0.5).budget == Budget(minutes=0.5)
    assert CompareConfig().budget == Budget(minutes=10.0)
    with pytest.raises(ConfigError, match="not both"):
        CompareConfig(budget=Budget(steps=4), budget_minutes=0.5)


def _overrides(config: CompareConfig) -> dict[str, dict]:
    return {p.name: training_overrides(p, config) for p in compare_plan(config)}


def test_a_step_budget_trains_exact_steps_with_no_time_limit():
    every = _overrides(CompareConfig(budget=Budget(steps=400), batch_size=32, seed=3))
    judge = every.pop("classifier")
    assert judge == {"batch_size": 32, "seed": 3, "tensorboard": False, "epochs": JUDGE_EPOCHS}  # never by steps
    for name, args in every.items():
        assert args["max_steps"] == 400 and "max_minutes" not in args and "epochs" not in args, name
        assert args["batch_size"] == 32 and args["seed"] == 3
    assert every["diffusion"]["snapshots"] == (0.25, 0.5)  # the curves' snapshots follow the steps


def test_a_time_budget_is_capped_by_max_steps_as_before():
    every = _overrides(CompareConfig(budget=Budget(minutes=0.5), max_steps=4))
    assert every["classifier"] == {  # no batch size: the data's default for each family (64 on the digits)
        "seed": 0,
        "tensorboard": False,
        "max_minutes": 0.5,
        "max_steps": 4,
        "epochs": JUDGE_EPOCHS,
    }
    assert all(args["max_minutes"] == 0.5 and args["max_steps"] == 4 for args in every.values())


def test_steps_per_family_override_the_budget_for_those_families_only():
    config = CompareConfig(budget=Budget(minutes=0.5), family_steps={"diffusion": 800, "ae": 200})
    every = _overrides(config)
    for name in ("diffusion", "diffusion-noskip"):
        assert every[name]["max_steps"] == 800 and "max_minutes" not in every[name]
    for name in ("ae-4", "ae-16", "ae-64", "ae-spatial"):
        assert every[name]["max_steps"] == 200 and "max_minutes" not in every[name]
    for name in ("vae", "dae-0.5", "latent-diffusion", "classifier"):
        assert every[name]["max_minutes"] == 0.5 and "max_steps" not in every[name]
    stepped = _overrides(CompareConfig(budget=Budget(steps=100), family_steps={"vae": 7}))
    assert stepped["vae"]["max_steps"] == 7 and stepped["dae-0.3"]["max_steps"] == 100


def test_the_progress_estimate_under_a_step_budget_uses_the_seconds_per_step_measured():
    config = CompareConfig(budget=Budget(steps=100), family_steps={"diffusion": 300}, runs={"vae": "runs/vae"})
    plan = compare_plan(config)
    jobs = planned_jobs(plan, [], config)
    trained = [p.name for p in plan if p.name != "vae"]  # the reused run trains nothing
    assert len([j for j in jobs if j.kind == "train"]) == len(trained)
    by_name = dict(zip(trained, jobs, strict=False))
    assert by_name["classifier"] == Job("train")  # the judge's epochs: unknown until it has trained
    assert by_name["ae-4"] == Job("train", steps=100) and by_name["diffusion"] == Job("train", steps=300)
    meter = Progress([Job("train", steps=100), Job("train", steps=300), Job("eval", seconds=30.0)], enabled=False)
    assert meter.time_left() is None  # no model has trained: no rate yet
    meter.finish("train", meter.start("training") - 20.0, steps=100)  # 100 steps in about 20 s
    left = meter.time_left()
    assert left is not None and 300 * 0.2 + 30 <= left < 300 * 0.21 + 30
    timed = Progress(planned_jobs(plan, [], CompareConfig(budget=Budget(minutes=0.5))), enabled=False)
    evaluations = (len(plan) - 1) * (1 + len(config.snapshots))  # every model but the judge, then its snapshots
    assert timed.time_left() == pytest.approx(len(plan) * 30 + evaluations * 30.0)


def test_the_report_states_the_budget_as_given_and_old_files_still_read():
    meta = {
        "data": "digits",
        "budget_minutes": 0.5,
        "max_steps": 4,
        "date": "2026-01-01 00:00 UTC",
        "aediff": "0",
        "torch": "2",
        "python": "3",
        "machine": "x86_64",
        "cpu": None,
        "threads": 2,
        "device": "cpu",
        "wall_seconds": 1.0,
        "config": {},
        "runs": {},
        "train_wall_seconds": {},
        "train_seconds": 1.0,
        "eval_seconds": 1.0,
    }  # a file from before step budgets
    old = decode(ReportMeta, meta)
    assert old.budget == Budget(minutes=0.5) and old.family_steps == {}
    assert budget_line(old) == "30 s of training per model (at most 4 steps)"
    stepped = decode(ReportMeta, {**meta, "budget_minutes": None, "max_steps": None, "budget_steps": 400})
    assert stepped.budget == Budget(steps=400) and budget_line(stepped) == "400 steps per model"
    stepped.family_steps = {"diffusion": 800}
    assert budget_line(stepped) == "400 steps per model; diffusion: 800 steps"
    assert decode(ReportMeta, encode(stepped)) == stepped  # through metrics.json and back


def test_a_step_budgeted_model_trains_exactly_its_steps(tmp_path):
    config = CompareConfig(data="digits", budget=Budget(steps=7), batch_size=16)
    planned = next(p for p in compare_plan(config) if p.name == "ae-4")
    training = {**training_overrides(planned, config), "snapshots": (), "warmup_steps": 2, "log_every": 5}
    aediff.train("ae", tmp_path / "ae", "digits", model={"channels": (8, 16), "bottleneck_dim": 4}, training=training,
                 progress=False)  # fmt: skip
    run = aediff.load(tmp_path / "ae")
    assert run.summary.steps == 7 and run.summary.images_seen == 7 * 16
    assert run.training.max_steps == 7 and run.training.max_minutes is None and run.training.epochs is None


CLI_REFUSALS = [
    (["--budget", "0steps"], "--budget must be at least 1 step"),
    (["--budget", "2.5 steps"], "not a whole number of steps"),
    (["--steps-per-family", "gan=40"], "--steps-per-family names gan"),
    (["--steps-per-family", "classifier=40"], "judge classifier keeps its fixed epochs"),
    (["--steps-per-family", "diffusion=0"], "at least 1 step"),
    (["--steps-per-family", "diffusion"], "FAMILY=STEPS"),
    (["--budget", "40steps", "--max-steps", "10"], "drop --max-steps"),
    (["--snapshots", "1.5"], "between 0 and 1"),
    (["--snapshots", "0.5,0.5"], "distinct budget fractions"),
    (["--snapshots", "half"], "--snapshots takes comma-separated numbers, e.g. 0.25,0.5 (or none)"),
]


@pytest.mark.slow  # ten `aediff` processes
def test_the_cli_refuses_bad_step_budgets_in_one_line(tmp_path):
    """As a user types them: exit 1, one error line naming the option and the fix, no traceback, nothing
    trained (every case is refused before the data is read)."""
    from concurrent.futures import ThreadPoolExecutor

    def refuse(case):
        args, _ = case
        return aediff_cli("compare", "--data", "digits", "--no-progress", *args, cwd=tmp_path)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(refuse, CLI_REFUSALS))
    for (args, message), (code, out) in zip(CLI_REFUSALS, results, strict=True):
        assert code == 1, (args, out)
        assert len(error_lines(out)) == 1 and message in out.replace("\n", " "), (args, out)
        assert "Traceback" not in out and "internal error" not in out, args
    assert not (tmp_path / "reports").exists()

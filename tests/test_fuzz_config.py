"""Config fuzzing: random overrides from every group, valid and invalid.

Each case is one experiment (made tiny) plus one drawn override whose validity
is known by construction, sometimes with a second, valid one. Valid cases must
compose and run (one batch with `fast_dev_run`); invalid ones must stop with a
one-line `ConfigError` (or Hydra's own message for an unknown option) that
names the key, and no case may end in any other exception. The default test
draws 60 cases and runs one batch for every eighth valid one (the others are
composed and validated); the slow test draws 220 and runs one batch for every
valid one, and a few invalid ones go through `run.py` to check status 2 and the
absence of a traceback.
"""

from __future__ import annotations

import random
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from conftest import compose_config
from odelab.errors import OdelabError, SolverError
from odelab.train import run
from odelab.validate import validate

ROOT = Path(__file__).resolve().parents[1]
GPU = torch.cuda.is_available()

# The smallest version of each experiment family that still runs every code path.
BASE = {
    "spiral": [
        "experiment=spiral",
        "data.n_points=100",
        "data.extrapolate_to=26",
        "data.batches_per_epoch=2",
    ],
    "lotka": [
        "experiment=dynamics_lotka_volterra",
        "data.n_points=100",
        "data.extrapolate_to=11",
        "data.batches_per_epoch=2",
    ],
    "mnist": [
        "experiment=mnist_odenet",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "model.net.channels=4",
    ],
    "resnet": [
        "experiment=mnist_resnet",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "model.net.channels=4",
        "model.net.num_blocks=1",
    ],
    "cnf": [
        "experiment=cnf_toy",
        "data.batch_size=32",
        "data.n_val=64",
        "data.n_test=64",
        "data.eval_batch_size=64",
        "model.flow.field.hidden=8",
        "model.grid_size=8",
        "model.n_plot_samples=32",
        "model.n_frames=2",
    ],
    "planar": [
        "experiment=planar_flow",
        "data.batch_size=32",
        "data.n_val=64",
        "data.n_test=64",
        "data.eval_batch_size=64",
        "model.flow.layers=4",
        "model.grid_size=8",
        "model.n_plot_samples=32",
        "model.n_frames=2",
    ],
    "robust": [
        "experiment=robust_odenet",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "model.net.channels=4",
        "attack.strengths=[0.1]",
    ],
}
DYNAMICS = ("spiral", "lotka")
IMAGES = ("mnist", "resnet", "robust")
DENSITY = ("cnf", "planar")
ODE = ("spiral", "lotka", "mnist", "cnf", "robust")
ALL = tuple(BASE)


@dataclass
class Knob:
    """One key with values known to be valid and values known to be invalid."""

    key: str  # an override key or a group name (`solver` for `solver=rk4`)
    valid: list[str]
    invalid: list[str]
    families: tuple[str, ...] = ALL
    needs: list[str] = field(default_factory=list)  # overrides that make the key exist
    names: str = ""  # what the error must name, when not the key itself

    def override(self, value: str) -> str:
        return f"{self.key}={value}"


def ckpt_files(folder: Path) -> dict[str, str]:
    """Checkpoint paths that must be refused: missing, a folder, corrupted, foreign, unsafe."""
    folder.mkdir(parents=True, exist_ok=True)
    corrupted = folder / "corrupted.ckpt"
    corrupted.write_bytes(b"PK\x03\x04 not really a zip archive")
    foreign = folder / "foreign.ckpt"
    torch.save(
        {
            "state_dict": {},
            "odelab": {"format": 1, "task_name": "some_other_experiment", "model": "some.Model"},
        },
        foreign,
    )
    unsafe = folder / "unsafe.ckpt"
    torch.save({"state_dict": {}, "payload": Knob("x", [], [])}, unsafe)
    return {
        "missing": str(folder / "nope.ckpt"),
        "folder": str(folder),
        "corrupted": str(corrupted),
        "foreign": str(foreign),
        "unsafe": str(unsafe),
    }


def knobs(ckpts: dict[str, str]) -> list[Knob]:
    return [
        # top-level keys
        Knob("seed", ["0", "7", "123"], ["-1", "abc", "1.5", "true"]),
        Knob("train", ["true"], ["yes", "3"]),
        Knob("test", ["true", "false"], ["maybe"]),
        Knob("ckpt_path", ["null"], [repr(p) for p in ckpts.values()]),
        Knob("optimized_direction", ["minimize", "maximize"], ["up"]),
        Knob("resume", ["false"], ["sometimes"]),
        Knob("task_name", [], ["''"]),
        Knob("bogus_key", [], ["1"]),
        # solver and sensitivity
        Knob(
            "solver",
            ["dopri5", "bosh3", "adaptive_heun", "rk4", "midpoint", "euler"],
            ["foo", "rk5"],
            ODE,
        ),
        Knob("solver.rtol", ["1e-3", "1e-5"], ["0", "-1e-3", "tight"], ODE),
        Knob("solver.atol", ["1e-3", "1e-6"], ["0", "-1", "[1,2]"], ODE),
        Knob("solver.max_num_steps", ["1000"], ["0", "-5", "2.5"], ODE, needs=["solver=dopri5"]),
        Knob("solver.max_nfe", ["50000", "null"], ["0", "many"], ODE),
        Knob(
            "solver.step_size", ["0.05", "0.25"], ["0", "-0.1", "small"], ODE, needs=["solver=rk4"]
        ),
        Knob("solver.method", ["rk4"], ["magic"], ODE),
        Knob("sensitivity", ["adjoint", "direct"], ["backprop"], ODE),
        Knob(
            "sensitivity.seminorm", ["true", "false"], ["yes"], ODE, needs=["sensitivity=adjoint"]
        ),
        Knob(
            "sensitivity.adjoint_method",
            ["rk4", "dopri5"],
            ["magic"],
            ODE,
            needs=["sensitivity=adjoint"],
        ),
        Knob("sensitivity.rtol", ["1e-4"], ["-1e-4"], ODE, needs=["sensitivity=adjoint"]),
        # trainer
        Knob(
            "trainer",
            ["cpu"] + (["gpu"] if GPU else []),
            ["tpu9"] + ([] if GPU else ["gpu"]),
            names="trainer",
        ),
        Knob(
            "trainer.accelerator",
            ["cpu", "auto"] if not GPU else ["cpu"],
            ["quantum"] + ([] if GPU else ["gpu", "cuda"]),
        ),
        Knob("trainer.max_epochs", ["1", "2"], ["-5", "1.5", "ten"]),
        Knob("trainer.precision", ["32-true", "32"], ["half", "8"]),
        Knob("trainer.gradient_clip_val", ["1.0", "null"], ["-1", "big"]),
        Knob("trainer.accumulate_grad_batches", ["1", "2"], ["0", "1.5"]),
        Knob("trainer.log_every_n_steps", ["1", "50"], ["0"]),
        Knob("trainer.limit_train_batches", ["1", "0.5"], ["-1", "1.5"]),
        Knob("trainer.devices", ["1"], ["0", "many", "-3"]),
        Knob("trainer.deterministic", ["true", "false"], ["sometimes"]),
        Knob("trainer.num_nodes", ["1"], ["0"]),
        Knob("trainer.check_val_every_n_epoch", ["1"], ["0"]),
        # logger and callbacks
        Knob("logger", ["csv", "none", "tensorboard"], ["foo"]),
        Knob(
            "++logger.csv.flush_logs_every_n_steps",
            ["10"],
            ["0"],
            needs=["logger=csv"],
            names="logger.csv.flush_logs_every_n_steps",
        ),
        Knob("callbacks", ["default", "none"], ["foo"]),
        Knob(
            "++callbacks.nfe_monitor.across_processes",
            ["mean", "sum"],
            ["max"],
            names="callbacks.nfe_monitor.across_processes",
        ),
        Knob("callbacks.model_checkpoint.save_top_k", ["1", "-1"], ["-3"]),
        # optimizer and schedule
        Knob("model.optimizer.lr", ["1e-3", "0.05"], ["0", "-0.01", "fast", "inf"]),
        Knob(
            "++model.optimizer.weight_decay",
            ["0.0", "1e-4"],
            ["-1e-4"],
            names="model.optimizer.weight_decay",
        ),
        Knob(
            "++model.optimizer.eps",
            ["1e-8"],
            ["0"],
            DYNAMICS + DENSITY + ("robust",),
            names="model.optimizer.eps",
        ),
        Knob(
            "++model.optimizer.betas",
            ["[0.9,0.99]"],
            ["[1.5,0.9]", "[0.9]"],
            DYNAMICS + DENSITY + ("robust",),
            names="model.optimizer.betas",
        ),
        Knob("model.optimizer.momentum", ["0.5", "0.0"], ["1.0", "-0.1"], ("mnist", "resnet")),
        Knob("model.optimizer.base_batch_size", ["64"], ["0"], ("mnist", "resnet")),
        Knob(
            "model.scheduler.milestones",
            ["[1,2]", "[5]"],
            ["[3,2]", "[-1]", "[1.5]"],
            ("mnist", "resnet"),
        ),
        Knob("model.scheduler.gamma", ["0.5"], ["0", "-0.5"], ("mnist", "resnet")),
        Knob("model.scheduler.T_max", ["10"], ["0", "-2"], DYNAMICS + DENSITY),
        Knob("model.scheduler_interval", ["epoch", "step"], ["hour"]),
        # data
        Knob("data.noise_std", ["0.0", "0.1"], ["-0.1", "loud"], DYNAMICS),
        Knob("data.batch_size", ["8"], ["0", "2.5", "-4"]),
        Knob("data.n_points", ["80"], ["1", "many"], DYNAMICS),
        Knob("data.t_end", ["5.0"], ["0", "-3"], DYNAMICS, needs=["data.extrapolate_to=6"]),
        Knob("data.batch_time", ["3"], ["1", "0"], DYNAMICS),
        Knob("data.batches_per_epoch", ["1"], ["0"], DYNAMICS + DENSITY),
        Knob("data.num_workers", ["0"], ["-1"], DYNAMICS + IMAGES),
        Knob("data.persistent_workers", ["false"], ["true", "maybe"], DYNAMICS + IMAGES),
        Knob("data.y0", ["[1.0,0.5]"], ["[]", "[a,b]"], DYNAMICS),
        Knob("data.val_size", ["100"], ["-1"], IMAGES),
        Knob("data.train_subset", ["64", "null"], ["0"], IMAGES),
        Knob("data.root", [], ["/nonexistent/mnist"], IMAGES),
        Knob("data.dataset", [], ["cifar"], IMAGES),
        Knob("data.eval_batch_size", ["32"], ["0"], IMAGES + DENSITY),
        Knob("data.augment", ["true", "false"], ["sometimes"], ("mnist", "resnet")),
        Knob("data.name", ["2spirals", "moons", "checkerboard"], ["spiralz"], DENSITY),
        Knob("data.n_test", ["32"], ["0"], DENSITY),
        Knob("data", [], ["nonexistent_data"]),
        # model
        Knob("model.field.hidden", ["16"], ["0", "wide"], DYNAMICS),
        Knob("model.field.activation", ["softplus"], ["sigmoidish"], DYNAMICS),
        Knob("model.field.dim", [], ["3"], DYNAMICS, names="model.field"),
        Knob("model.loss", ["l1", "mse"], ["l3"], DYNAMICS),
        Knob("model.net.channels", ["8"], ["0", "-2"], ("mnist", "resnet", "robust")),
        Knob("model.net.t_end", ["0.5"], ["0", "-1"], ("mnist", "robust")),
        Knob("model.label_smoothing", ["0.1"], ["1.5", "-0.1"], IMAGES),
        Knob("model.kinetic_weight", ["0.01"], ["-1"], ("cnf",)),
        Knob("model.flow.field.hidden", ["16"], ["0"], ("cnf",)),
        Knob("model.flow.t_end", ["0.5"], ["0"], ("cnf",)),
        Knob("model.flow.layers", ["2"], ["0"], ("planar",)),
        Knob("model.grid_size", ["6"], ["1"], DENSITY),
        Knob("model.n_frames", ["3"], ["1"], DENSITY),
        Knob("trace", ["exact", "hutchinson"], ["foo"], ("cnf",)),
        Knob("trace.noise", ["gaussian", "rademacher"], ["uniformish"], ("cnf",)),
        Knob("model", [], ["nonexistent_model"]),
        Knob("experiment", [], ["nonexistent_experiment"]),
        # robustness study
        Knob("recipe", ["clean", "gaussian", "fgsm"], ["bogus"], ("robust",)),
        Knob("recipe.fraction", ["0.5"], ["1.5", "-0.5"], ("robust",), needs=["recipe=gaussian"]),
        Knob("attack", ["none", "gaussian", "fgsm"], ["bogus"], ("robust",)),
        Knob(
            "attack.strengths", ["[0.1,0.2]"], ["[-0.1]", "[a]"], ("robust",), needs=["attack=fgsm"]
        ),
        Knob("attack.steps", ["2"], ["0"], ("robust",), needs=["attack=pgd"]),
    ]


@dataclass
class Case:
    family: str
    overrides: list[str]
    knob: Knob
    value: str
    valid: bool

    @property
    def key(self) -> str:
        return self.knob.names or self.knob.key.lstrip("+")


def draw_cases(n: int, seed: int, ckpts: dict[str, str]) -> list[Case]:
    rng = random.Random(seed)
    catalogue = knobs(ckpts)
    cases = []
    while len(cases) < n:
        knob = rng.choice(catalogue)
        family = rng.choice(knob.families)
        valid = bool(knob.valid) and (not knob.invalid or rng.random() < 0.5)
        value = rng.choice(knob.valid if valid else knob.invalid)
        extra = []
        # Sometimes a second, valid override from another key of the same family.
        if rng.random() < 0.3:
            other = rng.choice(
                [
                    k
                    for k in catalogue
                    if family in k.families and k.valid and not k.needs and k.key != knob.key
                ]
            )
            if other.key.split(".")[0] != knob.key.split(".")[0]:
                extra = [other.override(rng.choice(other.valid))]
        overrides = [*BASE[family], *knob.needs, *extra, knob.override(value)]
        cases.append(Case(family, overrides, knob, value, valid))
    return cases


def attempt(case: Case, out: Path, run_batch: bool) -> tuple[str, str]:
    """("ok" | "config" | "crash", message) for one case, in-process."""
    try:
        cfg = compose_config(case.overrides, out)
    except (HydraException, OmegaConfBaseException) as err:
        return "config", str(err)  # Hydra's own refusal (unknown option or key): no traceback
    try:
        if run_batch or not case.valid:
            with open_dict(cfg):
                cfg.trainer.fast_dev_run = True
            run(cfg)
        else:
            validate(cfg)
            OmegaConf.to_container(cfg, resolve=True)
    except SolverError as err:
        # A valid config whose training diverged (a field that blows up in a short run) stops
        # with its one-line solver message: it ran, and failed cleanly.
        return ("diverged" if case.valid else "config"), str(err)
    except OdelabError as err:
        return "config", str(err)
    except Exception:  # noqa: BLE001 - the test reports any other failure with its traceback
        return "crash", traceback.format_exc()
    return "ok", ""


def check_cases(cases: list[Case], tmp_path: Path, batch_every: int) -> None:
    failures = []
    valid_seen = diverged = 0
    for i, case in enumerate(cases):
        run_batch = False
        if case.valid:
            run_batch = valid_seen % batch_every == 0
            valid_seen += 1
        outcome, message = attempt(case, tmp_path / f"case{i}", run_batch)
        where = f"case {i} ({' '.join(case.overrides)})"
        diverged += outcome == "diverged"
        if outcome == "crash":
            failures.append(f"{where}: crashed\n{message}")
        elif case.valid and outcome not in ("ok", "diverged"):
            failures.append(f"{where}: valid but refused: {message}")
        elif not case.valid and outcome == "ok":
            failures.append(f"{where}: invalid but accepted")
        elif not case.valid:
            first = message.strip().splitlines()[0] if message.strip() else ""
            if case.key.split(".")[0] not in message or (
                "." in case.key
                and case.key not in message
                and case.key.rsplit(".", 1)[1] not in message
            ):
                failures.append(f"{where}: message does not name {case.key}: {first}")
            if "\n" in message.strip() and "Could not" not in message:
                failures.append(f"{where}: message is not one line: {message!r}")
    n_valid = sum(c.valid for c in cases)
    ran = (n_valid + batch_every - 1) // batch_every
    print(
        f"config fuzz: {len(cases)} cases tried ({n_valid} valid, {len(cases) - n_valid} "
        f"invalid; {ran} ran one batch, {diverged} of them stopped by a diverging solve); "
        f"{len(failures)} failures"
    )
    assert not failures, "\n\n".join(failures[:25])


def test_fuzz_config_60_cases(tmp_path: Path) -> None:
    # Composing a config takes about 0.3 s; the 220-case version is in the slow tier.
    ckpts = ckpt_files(tmp_path / "ckpts")
    check_cases(draw_cases(60, seed=17, ckpts=ckpts), tmp_path, batch_every=8)


@pytest.mark.slow
def test_fuzz_config_220_cases_every_valid_one_runs_a_batch(tmp_path: Path) -> None:
    ckpts = ckpt_files(tmp_path / "ckpts")
    check_cases(draw_cases(220, seed=18, ckpts=ckpts), tmp_path, batch_every=1)


@pytest.mark.slow
def test_invalid_overrides_exit_2_without_traceback(tmp_path: Path) -> None:
    ckpts = ckpt_files(tmp_path / "ckpts")
    cases = [
        ("model.optimizer.lr=-1", "model.optimizer.lr"),
        ("seed=abc", "seed"),
        (f"ckpt_path={ckpts['corrupted']}", "ckpt_path"),
        (f"ckpt_path={ckpts['foreign']}", "ckpt_path"),
        ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path"),
        ("trainer.max_epochs=ten", "trainer.max_epochs"),
        ("solver=foo", "solver"),
        ("bogus_key=1", "bogus_key"),
        ("train=yes", "train"),
    ] + ([] if GPU else [("trainer=gpu", "trainer=cpu")])
    for override, named in cases:
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "run.py"),
                *BASE["spiral"],
                "logger=none",
                override,
                f"hydra.run.dir={tmp_path / 'run'}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 2, (override, output[-2000:])
        assert "Traceback" not in output, (override, output[-2000:])
        assert named in output, (override, output[-2000:])
    print(f"run.py: {len(cases)} invalid overrides, each exit status 2, no traceback")

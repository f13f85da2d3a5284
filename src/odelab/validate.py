"""Start-up checks of a composed config: every bad value stops the run with one line.

`validate(cfg)` runs before anything is built. Each failed check raises a
`ConfigError` whose message names the key, the value and what is allowed, e.g.

    model.optimizer.lr=-0.1 is invalid: expected a number > 0

Constructors check the values only they can judge (a field's output shape, a
dataset's size); this module checks types and ranges of the keys a user types,
the optimizer and schedule (built on a dummy parameter, so a bad value fails
here rather than after the data has loaded), the device request against the
machine, data folders and `ckpt_path` (see `odelab.checkpoints`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from odelab.errors import ConfigError


@dataclass(frozen=True)
class Check:
    """A predicate on one value and the words that describe what it accepts."""

    accepts: Callable[[Any], bool]
    expected: str

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.accepts(value))
        except (TypeError, ValueError):
            return False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def _in_bounds(
    v: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    if low is not None and (v <= low if low_open else v < low):
        return False
    return not (high is not None and (v >= high if high_open else v > high))


def _nullable(check: Check, nullable: bool) -> Check:
    if not nullable:
        return check
    return Check(lambda v: v is None or check.accepts(v), f"{check.expected} or null")


def integer(
    low: int | None = None, high: int | None = None, nullable: bool = False, note: str = ""
) -> Check:
    bounds = _bounds(low, high, False, False)
    words = "an integer" + (f" {bounds}" if bounds else "") + (f" ({note})" if note else "")
    return _nullable(
        Check(lambda v: _is_int(v) and _in_bounds(v, low, high, False, False), words), nullable
    )


def number(
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    nullable: bool = False,
) -> Check:
    bounds = _bounds(low, high, low_open, high_open)
    words = "a finite number" + (f" {bounds}" if bounds else "")
    check = Check(lambda v: _is_number(v) and _in_bounds(v, low, high, low_open, high_open), words)
    return _nullable(check, nullable)


def positive(nullable: bool = False) -> Check:
    return number(0, low_open=True, nullable=nullable)


def fraction(high_open: bool = False) -> Check:
    return number(0, 1, high_open=high_open)


def boolean(nullable: bool = False) -> Check:
    return _nullable(Check(lambda v: isinstance(v, bool), "true or false"), nullable)


def choice(*options: Any, nullable: bool = False) -> Check:
    shown = ", ".join(str(o) for o in options)
    return _nullable(
        Check(lambda v: v in options and not isinstance(v, bool), f"one of {shown}"), nullable
    )


def text(nullable: bool = False) -> Check:
    return _nullable(
        Check(lambda v: isinstance(v, str) and v != "", "a non-empty string"), nullable
    )


def numbers(low: float | None = None, min_len: int = 0) -> Check:
    bounds = _bounds(low, None, False, False)
    words = f"a list of {'at least ' + str(min_len) + ' ' if min_len else ''}numbers" + (
        f" {bounds}" if bounds else ""
    )
    return Check(
        lambda v: (
            isinstance(v, list)
            and len(v) >= min_len
            and all(_is_number(x) and _in_bounds(x, low, None, False, False) for x in v)
        ),
        words,
    )


def increasing_ints() -> Check:
    return Check(
        lambda v: (
            isinstance(v, list)
            and all(_is_int(x) and x >= 0 for x in v)
            and all(a < b for a, b in itertools.pairwise(v))
        ),
        "a strictly increasing list of integers >= 0",
    )


def batch_limit() -> Check:
    # Lightning's limit_*_batches: a fraction of the loader or a number of batches.
    return Check(
        lambda v: v is None or (_is_int(v) and v >= 0) or (_is_number(v) and 0 <= v <= 1),
        "null, an integer >= 0 (batches) or a number in [0, 1] (fraction of the loader)",
    )


def devices() -> Check:
    return Check(
        lambda v: (
            v == "auto"
            or v == -1
            or (_is_int(v) and v >= 1)
            or (isinstance(v, list) and v and all(_is_int(x) and x >= 0 for x in v))
        ),
        "an integer >= 1, -1 or auto (all devices), or a list of device indices",
    )


PRECISIONS = (
    "32-true",
    "32",
    32,
    "64-true",
    "64",
    64,
    "16-mixed",
    "16",
    16,
    "bf16-mixed",
    "bf16",
    "16-true",
    "bf16-true",
    "transformer-engine",
    "transformer-engine-float16",
)

# Top-level keys of conf/run.yaml.
TOP = {
    "task_name": text(),
    "tags": Check(lambda v: isinstance(v, list), "a list of strings"),
    "seed": integer(0, 2**32 - 1, nullable=True),
    "ckpt_path": text(nullable=True),
    "train": boolean(),
    "test": boolean(),
    "resume": boolean(),
    "optimized_metric": text(nullable=True),
    "optimized_direction": choice("minimize", "maximize"),
    "test_ckpt": choice("last", "best"),
    "tol": positive(),
}

# Full paths; checked wherever they exist.
EXACT = {
    "solver.method": text(),
    "solver.rtol": positive(nullable=True),
    "solver.atol": positive(nullable=True),
    "solver.step_size": positive(nullable=True),
    "solver.max_num_steps": integer(1),
    "solver.max_nfe": integer(1, nullable=True),
    "solver.backend": choice("torchdiffeq", "torchode"),
    "solver.capture": boolean(),
    "solver.compile_field": boolean(),
    "sensitivity.method": choice("direct", "adjoint"),
    "sensitivity.rtol": positive(nullable=True),
    "sensitivity.atol": positive(nullable=True),
    "sensitivity.adjoint_method": text(nullable=True),
    "sensitivity.seminorm": boolean(),
    "trace.estimator": choice("exact", "hutchinson"),
    "trace.noise": choice("gaussian", "rademacher"),
    "recipe.fraction": fraction(),
    "recipe.warmup_epochs": number(0),
    "recipe.perturbation.eps": number(0),
    "recipe.perturbation.sigma": number(0),
    "recipe.perturbation.step_size": positive(nullable=True),
    "recipe.perturbation.steps": integer(1),
    "recipe.perturbation.restarts": integer(1),
    "recipe.perturbation.random_start": boolean(),
    "recipe.perturbation.seed": integer(0, nullable=True),
    "trainer.max_epochs": integer(-1, nullable=True, note="-1: no limit"),
    "trainer.min_epochs": integer(0, nullable=True),
    "trainer.max_steps": integer(-1, note="-1: no limit"),
    "trainer.min_steps": integer(0, nullable=True),
    "trainer.accelerator": choice("cpu", "gpu", "cuda", "mps", "tpu", "auto"),
    "trainer.devices": devices(),
    "trainer.num_nodes": integer(1),
    "trainer.strategy": text(),
    "trainer.precision": choice(*PRECISIONS),
    "trainer.check_val_every_n_epoch": integer(1, nullable=True),
    "trainer.val_check_interval": number(0, low_open=True, nullable=True),
    "trainer.log_every_n_steps": integer(1),
    "trainer.limit_train_batches": batch_limit(),
    "trainer.limit_val_batches": batch_limit(),
    "trainer.limit_test_batches": batch_limit(),
    "trainer.num_sanity_val_steps": integer(-1, note="-1: all"),
    "trainer.fast_dev_run": Check(
        lambda v: isinstance(v, bool) or (_is_int(v) and v >= 0),
        "true, false or a number of batches >= 0",
    ),
    "trainer.gradient_clip_val": number(0, nullable=True),
    "trainer.gradient_clip_algorithm": choice("norm", "value", nullable=True),
    "trainer.accumulate_grad_batches": integer(1),
    "trainer.deterministic": Check(
        lambda v: isinstance(v, bool) or v == "warn", "true, false or warn"
    ),
    "trainer.enable_progress_bar": boolean(),
    "trainer.enable_model_summary": boolean(),
    "trainer.enable_checkpointing": boolean(),
    "trainer.inference_mode": boolean(),
    "trainer.sync_batchnorm": boolean(),
    "trainer.benchmark": boolean(nullable=True),
    "trainer.default_root_dir": text(),
    "model.scheduler_interval": choice("epoch", "step"),
    "model.label_smoothing": fraction(high_open=True),
    "model.perturbed_fraction": fraction(),
    "model.learn_initial_states": Check(
        lambda v: v in ("auto", True, False), "auto, true or false"
    ),
    "model.loss": text(),
    "model.num_classes": integer(2),
    "model.grid_extent": positive(),
    "attack.kind": choice("none", "gaussian", "fgsm", "pgd"),
    "attack.strengths": numbers(0),
    "callbacks.model_checkpoint.save_top_k": integer(-1, note="-1: keep all"),
    "callbacks.model_checkpoint.every_n_epochs": integer(0, nullable=True),
    "callbacks.nfe_monitor.across_processes": choice("mean", "sum"),
    "logger.csv.flush_logs_every_n_steps": integer(1),
    "logger.wandb.mode": choice("auto", "online", "offline", "disabled"),
}

# Leaf names under one group (any depth), where the name alone fixes the meaning.
BY_NAME: dict[str, dict[str, Check]] = {
    "data": {
        "batch_size": integer(1),
        "eval_batch_size": integer(1),
        "batches_per_epoch": integer(1),
        "n_points": integer(2),
        "t_end": positive(),
        "extrapolate_to": positive(),
        "noise_std": number(0),
        "batch_time": integer(2),
        "batch_time_final": integer(2, nullable=True),
        "batch_time_growth_epochs": integer(0),
        "grid_size": integer(2),
        "y0": numbers(min_len=1),
        "seed": integer(0),
        "test_seed": integer(0),
        "num_workers": integer(0),
        "pin_memory": boolean(),
        "persistent_workers": boolean(),
        "download": boolean(),
        "offline_test_split": boolean(),
        "augment": boolean(),
        "val_size": integer(0),
        "test_size": integer(0),
        "train_subset": integer(1, nullable=True),
        "test_subset": integer(1, nullable=True),
        "n_val": integer(1),
        "n_test": integer(1),
        "root": text(),
        "name": text(),
        "dataset": text(),
    },
    "model": {
        "dim": integer(1),
        "hidden": integer(1),
        "depth": integer(1),
        "width": integer(1),
        "channels": integer(1),
        "layers": integer(1),
        "units": integer(1),
        "hyper_hidden": integer(1),
        "in_channels": integer(1),
        "num_blocks": integer(1),
        "image_size": integer(1),
        "num_classes": integer(2),
        "grid_size": integer(2),
        "n_plot_samples": integer(1),
        "n_frames": integer(2),
        "init_std": positive(),
        "t_end": positive(),
        "learn_t_end": boolean(),
        "horizon": positive(),
        "kinetic_weight": number(0),
        "jacobian_weight": number(0),
        "regularization_weight": number(0),
        "time_dependent": boolean(),
        "activation": text(),
        "input_transform": text(),
    },
    "attack": {
        "steps": integer(1),
        "restarts": integer(1),
        "random_start": boolean(),
        "seed": integer(0, nullable=True),
        "step_size": positive(nullable=True),
        "strengths": numbers(0),
        "kind": choice("none", "gaussian", "fgsm", "pgd"),
    },
}

# Optimizer and schedule arguments (torch names), under model.optimizer / model.scheduler.
OPTIMIZER = {
    "lr": positive(),
    "momentum": number(0, 1, high_open=True),
    "weight_decay": number(0),
    "dampening": number(0, 1),
    "nesterov": boolean(),
    "eps": positive(),
    "alpha": number(0, 1),
    "betas": Check(
        lambda v: (
            isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v)
        ),
        "two numbers in [0, 1)",
    ),
    "amsgrad": boolean(),
    "centered": boolean(),
    "batch_size": integer(1),
    "base_batch_size": integer(1),
}
SCHEDULER = {
    "milestones": increasing_ints(),
    "gamma": positive(),
    "T_max": integer(1),
    "eta_min": number(0),
    "step_size": integer(1),
    "T_0": integer(1),
    "T_mult": integer(1),
    "factor": positive(),
    "patience": integer(0),
    "total_iters": integer(1),
    "start_factor": number(0, 1, low_open=True),
    "end_factor": number(0, 1),
}

# Groups in the order they are checked: a value that a model config copies by
# interpolation (`${solver}`, `${attack}`) is reported under its own key first.
ORDER = (
    "solver",
    "sensitivity",
    "trace",
    "recipe",
    "attack",
    "data",
    "trainer",
    "model",
    "callbacks",
    "logger",
)


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{key}={_show(value)} is invalid: expected {expected}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _plain(cfg: DictConfig, key: str) -> Any:
    """The resolved value of a top-level key, as plain Python."""
    try:
        node = cfg[key]
        if isinstance(node, (DictConfig, ListConfig)):
            return OmegaConf.to_container(node, resolve=True)
        return node
    except OmegaConfBaseException as err:
        full_key = getattr(err, "full_key", None) or key
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{full_key} cannot be resolved: {first}") from None


def _leaves(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}")
    else:
        yield prefix, node


def _check_value(path: str, value: Any, check: Check) -> None:
    if not check(value):
        raise _fail(path, value, check.expected)


def check_values(cfg: DictConfig) -> None:
    """Types and ranges of every key the tables above know."""
    for key, check in TOP.items():
        if key in cfg:
            _check_value(key, _plain(cfg, key), check)
    for group in ORDER:
        if group not in cfg or cfg[group] is None:
            continue
        tree = _plain(cfg, group)
        if not isinstance(tree, dict):
            continue
        names = BY_NAME.get(group, {})
        for path, value in _leaves(tree, group):
            if path.endswith(("._target_", "._partial_")):
                continue
            if path in EXACT:
                _check_value(path, value, EXACT[path])
                continue
            if path.startswith("model.optimizer."):
                rule = OPTIMIZER.get(path.rsplit(".", 1)[1])
            elif path.startswith("model.scheduler."):
                rule = SCHEDULER.get(path.rsplit(".", 1)[1])
            else:
                rule = names.get(path.rsplit(".", 1)[1])
                # Copies of other groups inside the model (${solver}, ${attack}, ...)
                # were checked under their own keys.
                if any(f".{g}." in path for g in ("solver", "sensitivity", "trace", "attacks")):
                    rule = None
            if rule is not None:
                _check_value(path, value, rule)


def check_optimizer(cfg: DictConfig) -> None:
    """Build the optimizer and schedule on a dummy parameter: torch's own checks run now."""
    model = cfg.get("model")
    if model is None or model.get("optimizer") is None:
        return
    import torch
    from hydra.utils import instantiate

    param = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = instantiate(model.optimizer)(params=[param])
    except Exception as err:  # any refusal becomes one line naming the key
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(
            f"model.optimizer ({model.optimizer.get('_target_')}) "
            f"rejects its settings: {_first_line(err)}"
        ) from None
    if model.get("scheduler") is None:
        return
    try:
        instantiate(model.scheduler)(optimizer=optimizer)
    except Exception as err:  # noqa: BLE001 - any refusal becomes one line naming the key
        raise ConfigError(
            f"model.scheduler ({model.scheduler.get('_target_')}) "
            f"rejects its settings: {_first_line(err)}"
        ) from None


def _first_line(err: BaseException) -> str:
    cause = err
    while cause.__cause__ is not None:  # Hydra wraps constructor errors
        cause = cause.__cause__
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def check_devices(cfg: DictConfig) -> None:
    """A GPU request on a machine without one fails here, in our words."""
    trainer = cfg.get("trainer")
    if trainer is None:
        return
    accelerator = trainer.get("accelerator", "auto")
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} asks for a CUDA GPU, but this machine has none; "
            "use trainer=cpu (or trainer=ddp_cpu for distributed training on the CPU)"
        )
    wanted = trainer.get("devices", 1)
    count = len(wanted) if isinstance(wanted, ListConfig) else wanted
    if isinstance(count, int) and count > available:
        shown = OmegaConf.to_container(wanted) if isinstance(wanted, ListConfig) else wanted
        raise ConfigError(
            f"trainer.devices={_show(shown)}"
            f" asks for more GPUs than the {available} this machine has; "
            f"set trainer.devices to at most {available}"
        )


def check_data_paths(cfg: DictConfig) -> None:
    """A data folder that does not exist, when nothing would download it."""
    data = cfg.get("data")
    if data is None or "root" not in data or data.get("download", False):
        return
    root = Path(str(data.root))
    if not root.exists():
        raise ConfigError(
            f"data.root={str(root)!r} does not exist; set data.root to the folder holding the "
            "dataset's files, or data.download=true on a machine with network (offline MNIST: "
            "data=mnist_t10k)"
        )


def validate(cfg: DictConfig, data: bool = True) -> None:
    """Every start-up check; raises `ConfigError` on the first bad value. `data=False` leaves
    out the data folder's, for a caller that checks it only when the run needs its data."""
    from odelab.checkpoints import check_ckpt_path

    check_values(cfg)
    check_devices(cfg)
    if data:
        check_data_paths(cfg)
    check_optimizer(cfg)
    check_ckpt_path(cfg)

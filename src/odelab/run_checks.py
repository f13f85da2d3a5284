"""Checks of what no odelab constructor receives, made before anything is built.

Each odelab constructor checks its own arguments: their types against its signature
(`odelab.checks.check_types`, run here over the whole config first, so a value that a
model copies by interpolation, `${solver}`, is reported under its own key) and their
ranges in its body. What is left for this module: the top-level keys of `conf/run.yaml`,
which `odelab.train.run` reads itself, and the ranges of Lightning's `Trainer`, `CSVLogger`
and `ModelCheckpoint` arguments that Lightning checks late (once fitting starts) or never.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from odelab.checks import (
    Check,
    boolean,
    check_args,
    check_types,
    choice,
    integer,
    number,
    positive,
    text,
)
from odelab.errors import ConfigError, OdelabError

# Top-level keys of conf/run.yaml.
RUN = {
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


def _batches() -> Check:
    # Lightning's limit_*_batches: a fraction of the loader or a number of batches.
    return Check(
        lambda v: v is None or (isinstance(v, int) and v >= 0) or (0 <= v <= 1),
        "null, an integer >= 0 (batches) or a number in [0, 1] (fraction of the loader)",
    )


# Ranges of Lightning's own arguments (its signature gives the types) that it accepts
# at construction and fails on later, deep in a loop, or silently misreads.
LIGHTNING = {
    "trainer": {
        "max_epochs": integer(-1, nullable=True, note="-1: no limit"),
        "min_epochs": integer(0, nullable=True),
        "max_steps": integer(-1, note="-1: no limit"),
        "min_steps": integer(0, nullable=True),
        "accelerator": choice("cpu", "gpu", "cuda", "mps", "tpu", "auto"),
        "devices": Check(
            lambda v: (
                v in ("auto", -1)
                or (isinstance(v, int) and v >= 1)
                or (isinstance(v, list) and v and all(isinstance(x, int) and x >= 0 for x in v))
            ),
            "an integer >= 1, -1 or auto (all devices), or a list of device indices",
        ),
        "num_nodes": integer(1),
        "check_val_every_n_epoch": integer(1, nullable=True),
        "val_check_interval": number(0, low_open=True, nullable=True),
        "log_every_n_steps": integer(1),
        "limit_train_batches": _batches(),
        "limit_val_batches": _batches(),
        "limit_test_batches": _batches(),
        "num_sanity_val_steps": integer(-1, note="-1: all"),
        "fast_dev_run": Check(
            lambda v: isinstance(v, bool) or (isinstance(v, int) and v >= 0),
            "true, false or a number of batches >= 0",
        ),
        "gradient_clip_val": number(0, nullable=True),
        "accumulate_grad_batches": integer(1),
        "deterministic": Check(lambda v: isinstance(v, bool) or v == "warn", "true, false or warn"),
        "default_root_dir": text(),
    },
    "logger.csv": {"flush_logs_every_n_steps": integer(1)},
    "callbacks.model_checkpoint": {
        "save_top_k": integer(-1, note="-1: keep all"),
        "every_n_epochs": integer(0, nullable=True),
    },
}

# Groups in the order their types are checked: a group that a model copies by
# interpolation (`${solver}`, `${attack}`) comes before the model.
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


# Groups whose objects are settings, cheap to build twice (odelab.ode.config, models.cnf).
SETTINGS = ("solver", "sensitivity", "trace")


def _build(tree: dict[str, Any]) -> None:
    """Instantiate a settings object; its own ConfigError comes out unwrapped."""
    try:
        instantiate(tree)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, OdelabError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def plain(cfg: DictConfig, key: str) -> Any:
    """The resolved value at a dotted key, as plain Python (None where it is absent)."""
    try:
        node = OmegaConf.select(cfg, key, throw_on_missing=True)
        if isinstance(node, (DictConfig, ListConfig)):
            return OmegaConf.to_container(node, resolve=True)
        return node
    except OmegaConfBaseException as err:
        full_key = getattr(err, "full_key", None) or key
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{full_key} cannot be resolved: {first}") from None


def check_run(cfg: DictConfig) -> None:
    """The top-level keys, every constructor's argument types, Lightning's ranges."""
    check_args("", RUN, {key: plain(cfg, key) for key in RUN if key in cfg})
    # Lightning's first: a model's schedule reads trainer.max_epochs by interpolation.
    for key, rules in LIGHTNING.items():
        tree = plain(cfg, key)
        if isinstance(tree, dict):
            check_args(key, rules, tree)
    for group in ORDER:
        tree = plain(cfg, group) if group in cfg else None
        if isinstance(tree, dict):
            check_types(tree, group)
        if group in SETTINGS and isinstance(tree, dict) and "_target_" in tree:
            # Small frozen settings objects: built here, their constructors judge their
            # ranges under their own key even where no model uses them (planar_flow).
            _build(tree)


def check_selection(cfg: DictConfig) -> None:
    """Sweeps select on a validation metric, in a stated direction; never on a test metric;
    `test_ckpt=best` needs a val/ monitor."""
    check_args("", {k: RUN[k] for k in ("optimized_direction", "test_ckpt")}, cfg)
    name = cfg.get("optimized_metric")
    if name and not str(name).startswith("val/"):
        raise ConfigError(
            f"optimized_metric={name} selects on a non-validation metric; use a val/... metric "
            "(test metrics are read once, for the final table)"
        )
    if cfg.get("test_ckpt", "last") == "best":
        monitor = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor")
        if not monitor or not str(monitor).startswith("val/"):
            raise ConfigError(
                f"test_ckpt=best needs callbacks.model_checkpoint.monitor set to a val/ metric "
                f"(got {monitor!r}), e.g. callbacks.model_checkpoint.monitor=val/acc "
                "callbacks.model_checkpoint.mode=max"
            )

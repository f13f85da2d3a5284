"""Start-up checks no constructor can make: every bad value stops the run with one line.

Each constructor checks its own arguments (types from its signature, ranges in its body;
`odelab.checks`), and `odelab.run_checks` the top-level keys and Lightning's. What is left
here needs more than one object's arguments: the optimizer and schedule, built on a dummy
parameter (so a bad value fails before the data has loaded, and with the ranges torch
itself lets through), the device request against the machine, data folders and
`ckpt_path` (see `odelab.checkpoints`). Each failed check raises a `ConfigError` naming
the key, e.g.

    model.optimizer.lr=-0.1 is invalid: expected a finite number > 0
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from odelab.checks import (
    ArgumentError,
    Check,
    boolean,
    check_args,
    increasing_ints,
    integer,
    number,
    positive,
    show,
)
from odelab.errors import ConfigError
from odelab.run_checks import check_run, plain

# Optimizer and schedule arguments (torch names) that torch accepts and then trains badly
# on (lr=0, momentum=1, gamma=0) or fails on at the first step (T_max=0, betas=[0.9]).
OPTIMIZER = {
    "lr": positive(),
    "momentum": number(0, 1, high_open=True),
    "weight_decay": number(0),
    "dampening": number(0, 1),
    "nesterov": boolean(),
    "eps": positive(),
    "alpha": number(0, 1),
    "betas": Check(
        lambda v: len(v) == 2 and all(number(0, 1, high_open=True)(b) for b in v),
        "two numbers in [0, 1)",
    ),
    "amsgrad": boolean(),
    "centered": boolean(),
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


def check_optimizer(cfg: DictConfig) -> None:
    """Build the optimizer and schedule on a dummy parameter: torch's own checks run now."""
    model = cfg.get("model")
    if model is None or model.get("optimizer") is None:
        return
    import torch
    from hydra.utils import instantiate

    for name, rules in (("optimizer", OPTIMIZER), ("scheduler", SCHEDULER)):
        if model.get(name) is not None:
            _check_ranges(model[name], f"model.{name}", rules)
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


def _check_ranges(node: DictConfig, key: str, rules: dict[str, Check]) -> None:
    """`check_args` on a node; a refused value set by interpolation names its source (the
    schedule's `T_max: ${trainer.max_epochs}`), the key a user would change."""
    try:
        check_args(key, rules, plain(node, ""))
    except ArgumentError as err:
        raw = OmegaConf.to_container(node, resolve=False).get(err.name.rsplit(".", 1)[1])
        if isinstance(raw, str) and "${" in raw:
            raise ConfigError(f"{err} (the value comes from {raw}; change that)") from None
        raise


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
            f"trainer.devices={show(shown)}"
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

    check_run(cfg)
    check_devices(cfg)
    if data:
        check_data_paths(cfg)
    check_optimizer(cfg)
    check_ckpt_path(cfg)

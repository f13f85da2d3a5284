"""Which settings one run may change between its invocations, and the check `resume=true` makes.

Split from `checkpoints` (which calls `check_same_settings` before it resumes) to keep both
modules short; it depends on no Lightning object, only on the composed config and the saved
`config.yaml`.
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odelab.errors import FolderInUse

# Keys that may differ between the invocations of one run: where it runs and how it
# reports, not what it computes (`trainer.max_epochs` may grow: the run trains on).
OPERATIONAL = (
    "paths", "resume", "ckpt_path", "train", "test", "logger", "callbacks", "tags",
    "trainer.default_root_dir", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "trainer.max_time", "trainer.max_epochs", "trainer.log_every_n_steps", "data.root",
    "data.download", "data.num_workers", "data.pin_memory", "data.persistent_workers",
)  # fmt: skip

# Solver guards (they stop a runaway solve and change nothing in one that finishes) and
# fast paths (CUDA graphs, a compiled field: the same solve, faster), wherever they sit.
NEUTRAL_LEAVES = ("max_nfe", "max_num_steps", "capture", "compile_field")


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    """Dotted key -> plain value; an empty mapping counts as a value."""
    if isinstance(node, dict) and node:
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _compared(key: str) -> bool:
    operational = any(key == op or key.startswith(op + ".") for op in OPERATIONAL)
    return not operational and key.rsplit(".", 1)[-1] not in NEUTRAL_LEAVES


def _epochs(value: object) -> float:
    """`trainer.max_epochs` as a number; None and -1 (no limit) as infinity."""
    return math.inf if value is None or int(value) < 0 else int(value)  # type: ignore[arg-type]


def changed_settings(cfg: DictConfig, output_dir: Path) -> tuple[list[str], tuple[float, float]]:
    """How this run's settings differ from those the run in `output_dir` was made with
    (its `config.yaml`): the changed keys as `key: old -> new` (operational ones left out;
    a key new on one side counts where the other side holds a plain value above it, e.g.
    a null that became a mapping), and (old, new) `trainer.max_epochs`."""
    path = output_dir / "config.yaml"
    max_epochs = cfg.trainer.get("max_epochs") if cfg.get("trainer") else None
    epochs = _epochs(max_epochs)
    if not path.is_file():
        return [], (epochs, epochs)
    now = OmegaConf.to_container(cfg, resolve=True)
    now.pop("hydra", None)  # type: ignore[union-attr]
    # Both through YAML, as the saved file went, so that values compare alike.
    before = _leaves(OmegaConf.to_container(OmegaConf.load(path)))
    after = _leaves(OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(now))))
    changed = {
        key: f"{key}: {before[key]!r} -> {after[key]!r}"
        for key in before.keys() & after.keys()
        if before[key] != after[key] and _compared(key)
    }
    for one, other, arrow in ((before, after, "... -> {}"), (after, before, "{} -> ...")):
        for key in one.keys() - other.keys():
            parts = key.split(".")
            above = next(
                (".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in other),
                None,
            )
            if above is not None and _compared(key) and _compared(above):
                shown = arrow.format(repr(other[above]))
                changed.setdefault(above, f"{above}: {shown}")
    old = _epochs(before.get("trainer.max_epochs", max_epochs))
    return [changed[k] for k in sorted(changed)], (old, epochs)


def check_same_settings(cfg: DictConfig, output_dir: Path) -> tuple[float, float]:
    """`resume=true` continues the run in `output_dir` only with the settings it was made
    with; `trainer.max_epochs` may grow. Returns (old, new) max_epochs."""
    changed, (old, new) = changed_settings(cfg, output_dir)
    if new < old:
        changed.append(f"trainer.max_epochs: {old} -> {new} (a run cannot train fewer epochs)")
    if changed:
        shown = "; ".join(changed[:3]) + (
            f"; and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        follows = (
            " (with trainer.max_epochs changed, a value that follows it by interpolation, such "
            "as a schedule's length, changes too: set it explicitly to train on)"
            if new != old
            else ""
        )
        raise FolderInUse(
            f"resume=true, but the run in {output_dir} was made with other settings "
            f"({shown}){follows}; run these settings in another output folder "
            "(hydra.run.dir / hydra.sweep.dir)"
        )
    return old, new

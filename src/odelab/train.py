"""Build everything from a composed config, train, test and summarise."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from odelab.errors import OdelabError
from odelab.loggers import finish_loggers

log = logging.getLogger(__name__)


def build(node: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, re-raising odelab's own errors unwrapped.

    Hydra wraps constructor errors in an InstantiationException; ours already say
    which key to fix, so they surface as they are.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, OdelabError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-objects group (callbacks, loggers)."""
    if not group:
        return []
    return [build(node) for node in group.values() if node and "_target_" in node]


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return dict(sorted(out.items()))


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and/or test the task the config describes; return its final metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule: L.LightningDataModule = build(cfg.data)
    model: L.LightningModule = build(cfg.model)
    callbacks: list[Callback] = _instantiate_group(cfg.get("callbacks"))
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        for logger in loggers:
            logger.log_hyperparams(resolved)
        metrics: dict[str, float] = {}
        if cfg.get("train", True):
            with warnings.catch_warnings():
                # With OnExceptionCheckpoint among the callbacks, Lightning reads
                # ckpt_path=None as "resume from last" and warns twice when a fresh
                # run has no checkpoint yet; a fresh start is what null means here.
                warnings.filterwarnings("ignore", message=r".*ckpt_path=None\)` was called without a model")
                warnings.filterwarnings("ignore", message=r'.*ckpt_path="last"\) is set, but there is no last')
                trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update(_scalars(trainer.callback_metrics))
        if cfg.get("test", True):
            test_ckpt = None if cfg.get("train", True) else cfg.get("ckpt_path")
            trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt)
            metrics.update(_scalars(trainer.callback_metrics))
        metrics = dict(sorted(metrics.items()))
        if trainer.is_global_zero:
            (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            for logger in loggers:
                if hasattr(logger, "experiment") and hasattr(logger.experiment, "summary"):
                    logger.experiment.summary.update(metrics)
    finally:
        finish_loggers(loggers)

    if trainer.is_global_zero:
        print_summary(cfg, metrics, output_dir)
    return metrics


def print_summary(cfg: DictConfig, metrics: dict[str, float], output_dir: Path) -> None:
    lines = [f"odelab run: {cfg.task_name}", f"  output:      {output_dir}"]
    for name in ("checkpoints", "plots"):
        if (output_dir / name).is_dir():
            lines.append(f"  {name + ':':<12} {output_dir / name}")
    # Lightning also reports "<key>_step"/"<key>_epoch" copies; show each value once.
    shown = {k: v for k, v in metrics.items() if not k.endswith(("_step", "_epoch"))}
    width = max((len(k) for k in shown), default=0)
    lines.append("  final metrics:")
    lines += [f"    {k:<{width}}  {v:.6g}" for k, v in shown.items()]
    print("\n".join(lines))


def objective(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a sweeper optimizes: `optimized_metric`, NaN when it is missing."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    value = metrics.get(name)
    if value is None:
        log.warning("optimized_metric %r was not logged; returning NaN", name)
        return math.nan
    return value

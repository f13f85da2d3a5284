"""Build everything from a composed config, train, test and summarise."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf

from odelab.checkpoints import check_state_dict, finished_metrics, resume_checkpoint
from odelab.errors import ConfigError, OdelabError, SolverError
from odelab.loggers import finish_loggers, quiet_lightning
from odelab.run_checks import check_selection
from odelab.validate import check_data_paths, validate

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
        # A value of the wrong type or out of range that no check of ours caught (a string
        # where a number belongs): still one line naming the config node, not a traceback.
        inner = err.__cause__
        while inner is not None and inner.__cause__ is not None:
            inner = inner.__cause__
        if isinstance(inner, TypeError | ValueError | MisconfigurationException):
            # Hydra's message ends with the key of the node whose constructor refused.
            found = re.search(r"full_key: (\S+)", str(err))
            key = found.group(1) if found else node._get_full_key(None) or "config"
            raise ConfigError(
                f"{key}: a value has the wrong type or is out of range ({type(inner).__name__}: "
                f"{str(inner).splitlines()[0] if str(inner) else 'no detail'}); check the "
                f"{key}.* overrides"
            ) from None
        raise


def _instantiate_group(group: DictConfig | None, key: str) -> list[Any]:
    """Instantiate every entry of a dict-of-objects group (callbacks, loggers).

    An entry set to null is switched off; any other entry must name a `_target_`.
    """
    if not group:
        return []
    objects = []
    for name, node in group.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(
                f"{key}.{name} has no _target_; give it one or switch it off with {key}.{name}=null"
            )
        objects.append(build(node))
    return objects


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
    quiet_lightning()
    check_selection(cfg)
    validate(cfg, data=False)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    done = finished_metrics(cfg, output_dir)
    if done is not None:
        log.info("%s already finished (resume=true): skipped, metrics.json kept", output_dir)
        return done
    # After the finished-run skip: a finished run restored into a clone without the data
    # is skipped, not failed.
    check_data_paths(cfg)
    ckpt_path = resume_checkpoint(cfg, output_dir)

    datamodule: L.LightningDataModule = build(cfg.data)
    model: L.LightningModule = build(cfg.model)
    if ckpt_path is not None:
        check_state_dict(ckpt_path, model, cfg)
    callbacks: list[Callback] = _instantiate_group(cfg.get("callbacks"), "callbacks")
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"), "logger")
    try:
        trainer: L.Trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    except MisconfigurationException as err:  # what our checks did not foresee, in one line
        raise ConfigError(f"trainer: {str(err).strip().splitlines()[0]}") from None

    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved.pop("hydra", None)  # type: ignore[union-attr]
        if trainer.is_global_zero:
            # Every interpolation resolved (Hydra's .hydra/config.yaml keeps them): what the
            # run reader (odelab.runs.load_run) and the reports load.
            # Write-then-rename: `resume=true` compares the next invocation with this file.
            partial = output_dir / "config.yaml.part"
            OmegaConf.save(OmegaConf.create(resolved), partial)
            partial.replace(output_dir / "config.yaml")
        for logger in loggers:
            logger.log_hyperparams(resolved)
        metrics: dict[str, float] = {}
        if cfg.get("train", True):
            with stopped_cleanly(output_dir, trainer):
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            # Values last logged before the checkpoint a run resumed from (a measurement
            # taken at one step) count as an uninterrupted run would count them.
            for callback in callbacks:
                metrics.update(getattr(callback, "restored_metrics", {}))
            metrics.update(_scalars(trainer.callback_metrics))
        if cfg.get("test", True):
            test_ckpt = None if cfg.get("train", True) else ckpt_path
            if cfg.get("train", True) and cfg.get("test_ckpt", "last") == "best":
                # The model_checkpoint's best epoch on its validation monitor.
                test_ckpt = "best"
            with stopped_cleanly(output_dir, trainer):
                trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True)
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


@contextlib.contextmanager
def stopped_cleanly(output_dir: Path, trainer: L.Trainer) -> Iterator[None]:
    """SIGTERM and diverging solves end the run with a message naming the checkpoint to resume.

    Lightning stops after the batch in progress when SIGTERM arrives; the
    interrupt checkpoint is written by then. The process exits with 143
    (128 + SIGTERM), so a launcher sees that the run did not finish.
    """
    last = output_dir / "checkpoints" / "last.ckpt"
    try:
        yield
    except SIGTERMException:
        if last.is_file():
            log.error(
                "stopped by SIGTERM after step %d; resume exactly from the last epoch with "
                "ckpt_path=%s (or rerun with resume=true in the same folder)",
                trainer.global_step,
                last,
            )
        else:
            log.error(
                "stopped by SIGTERM after step %d, before the first epoch finished; a rerun "
                "(resume=true or not) starts afresh",
                trainer.global_step,
            )
        raise SystemExit(128 + signal.SIGTERM) from None
    except SolverError as err:
        kept = (
            f"the last good checkpoint is {last}"
            if last.is_file()
            else "no epoch finished, so there is no checkpoint"
        )
        raise SolverError(f"{err} Stopped at step {trainer.global_step}; {kept}.") from err


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

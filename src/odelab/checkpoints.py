"""Checkpoints that resume exactly, load safely and say where they come from.

Every checkpoint a run writes carries, beside Lightning's own state, an `odelab`
record (`RunState`): the experiment and model that wrote it, the global random
states at the moment of saving, and the CSV log up to that step. A run resumed
from it therefore draws the same random numbers as an uninterrupted run and its
`csv/metrics.csv` lists every step once.

Checkpoints are loaded with `torch.load(..., weights_only=True)`: only tensors
and plain Python values, never arbitrary objects. `check_ckpt_path` and
`check_state_dict` turn a missing, unreadable, corrupted or foreign checkpoint
into one line naming the file and what it holds against what the run expects.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from odelab.distributed import is_rank_zero
from odelab.errors import ConfigError, FolderInUse
from odelab.run_settings import check_same_settings

log = logging.getLogger(__name__)

RECORD_KEY = "odelab"
# Version of the `odelab` record; a checkpoint without one predates it.
FORMAT = 1


def rng_states() -> dict[str, Any]:
    """Global random states as tensors and plain Python values (weights_only-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(state), gauss],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _csv_loggers(trainer: L.Trainer) -> list[CSVLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)]


class RunState(Callback):
    """Writes the `odelab` record into every checkpoint and restores it on resume.

    Args:
        task_name: the experiment (`task_name`) of the run.
        model: the model's `_target_`, named in errors about foreign checkpoints.
    """

    def __init__(self, task_name: str = "", model: str = ""):
        self.task_name, self.model = task_name, model
        # Final metrics of the run at the checkpoint it resumed from (train.run merges them).
        self.restored_metrics: dict[str, float] = {}

    def on_save_checkpoint(
        self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        logs = {}
        # Only the global rank zero writes logs (and checkpoints) under DDP.
        for logger in _csv_loggers(trainer) if trainer.is_global_zero else []:
            logger.save()  # flush: the record holds every row logged so far
            path = Path(logger.experiment.metrics_file_path)
            logs[logger.name or "csv"] = path.read_text() if path.is_file() else ""
        checkpoint[RECORD_KEY] = {
            "format": FORMAT,
            "task_name": self.task_name,
            "model": self.model,
            "rng": rng_states(),
            "csv": logs,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        record = checkpoint.get(RECORD_KEY)
        if record is None or trainer.state.fn != "fit":
            return  # evaluation keeps its own random stream and starts its own log
        # Restored before the first batch is drawn, so the resumed run continues
        # the random stream where the checkpointed run stood.
        set_rng_states(record["rng"])
        self.restored_metrics = dict(record.get("metrics", {}))
        for logger in _csv_loggers(trainer) if trainer.is_global_zero else []:
            _restore_csv(logger, record["csv"].get(logger.name or "csv", ""))


def _restore_csv(logger: CSVLogger, text: str) -> None:
    """Start this run's CSV log with the rows the checkpointed run had logged."""
    if not text.strip():
        return
    writer = logger.experiment  # creating it removes a stale metrics.csv
    Path(writer.metrics_file_path).write_text(text)
    header = next(csv.reader(io.StringIO(text)))
    writer.metrics_keys = sorted(set(header))
    writer.metrics = []


def _fit_done(trainer: L.Trainer) -> bool:
    """`trainer.fit_loop.done`, read without its side effect: each read of a finished loop
    logs "`Trainer.fit` stopped: ..." again, and Lightning has already logged it once."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    was_disabled, rank_zero.disabled = rank_zero.disabled, True
    try:
        return trainer.fit_loop.done
    finally:
        rank_zero.disabled = was_disabled


def at_epoch_boundary(fit_loop: dict[str, Any]) -> None:
    """Loop state of a fit between two epochs, from one taken as the next epoch starts.

    By `on_train_epoch_start` Lightning has counted the new epoch as ready and
    still holds the finished epoch's per-epoch batch counters; restored as they
    are, the new epoch would count as already run. The state here is the one
    right after the previous epoch completed, from which Lightning starts the
    next epoch afresh.
    """
    for tracker in fit_loop["epoch_progress"].values():
        tracker["ready"] = tracker["started"]

    def fresh(node: dict[str, Any]) -> None:
        for key, value in node.items():
            if key == "current" and isinstance(value, dict):
                node[key] = {k: 0 if isinstance(v, int) else v for k, v in value.items()}
                for sub in node[key].values():
                    if isinstance(sub, dict):
                        fresh(sub)
            elif key == "is_last_batch":
                node[key] = False
            elif isinstance(value, dict):
                fresh(value)

    for key, value in fit_loop.items():
        if key.startswith("epoch_loop.") and isinstance(value, dict):
            fresh(value)


class LastCheckpoint(Callback):
    """Writes `last.ckpt` once an epoch is completely over, and when training ends.

    Lightning's `ModelCheckpoint` saves after validation, before the epoch's
    training means are logged; a run resumed from there never logs them. This
    one saves as the next epoch starts, before its first batch is drawn, so the
    checkpoint holds every row of the finished epoch, the random states from
    which the next epoch draws its batches, and nothing half done.

    Args:
        dirpath: folder of the checkpoint (`<run dir>/checkpoints`).
        filename: file name without extension.
    """

    def __init__(self, dirpath: str, filename: str = "last"):
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._just_restored = False

    def on_load_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        self._just_restored = True

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        # Write-then-rename: a kill while saving leaves the previous checkpoint whole.
        partial = self.path.with_suffix(".ckpt.part")
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        if not _fit_done(trainer):
            at_epoch_boundary(checkpoint["loops"]["fit_loop"])
        trainer.strategy.save_checkpoint(checkpoint, partial)
        trainer.strategy.barrier("LastCheckpoint")
        if trainer.is_global_zero:
            partial.replace(self.path)

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._just_restored:  # the checkpoint just loaded is this very state
            self._just_restored = False
            return
        if trainer.current_epoch > 0:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._save(trainer)


class InterruptCheckpoint(Callback):
    """On a crash, Ctrl-C or SIGTERM, the full training state at that moment in
    `<dirpath>/<filename>.ckpt`; removed once a later run in the folder finishes training.

    Not Lightning's `OnExceptionCheckpoint`: with one of those among the callbacks,
    Lightning reads `fit(ckpt_path=None)` as "resume from the newest checkpoint" and picks
    up this mid-epoch state (which does not resume exactly) or an earlier run's
    `last.ckpt` unasked. Here a run resumes only from what `resume_checkpoint` names.
    Weights that hold NaN or inf (after a diverging solve) are not saved: they could not
    be resumed, and the epoch checkpoints (`last.ckpt`) are the last good state.
    """

    def __init__(self, dirpath: str | Path, filename: str = "on_exception") -> None:
        if not filename:
            raise ConfigError("callbacks.on_exception_checkpoint.filename must not be empty")
        self.ckpt_path = str(Path(dirpath) / f"{filename}.ckpt")

    def on_exception(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        module = trainer.lightning_module
        finite = module is None or all(bool(torch.isfinite(p).all()) for p in module.parameters())
        if not finite:
            log.warning(
                "weights hold NaN/inf; %s not written, last.ckpt is the last good state",
                self.ckpt_path,
            )
            return
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # the full training state

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # reached only when training ended without an exception
            trainer.strategy.remove_checkpoint(self.ckpt_path)


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """`torch.load(weights_only=True)` on the CPU; any failure is a ConfigError naming `key`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"{key}={str(path)!r} does not exist; pass the path of a .ckpt file "
            "(a run's checkpoints/last.ckpt)"
        )
    if path.is_dir():
        raise ConfigError(
            f"{key}={str(path)!r} is a folder; pass a .ckpt file inside it "
            "(e.g. checkpoints/last.ckpt)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise ConfigError(f"{key}={str(path)!r} cannot be read (permission denied)") from None
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Weights only" in str(err):
            raise ConfigError(
                f"{key}={str(path)!r} holds Python objects other than tensors and plain values; "
                "odelab loads checkpoints with weights_only=True, so only checkpoints written "
                "by odelab's runs are accepted"
            ) from None
        raise ConfigError(f"{key}={str(path)!r} is corrupted ({_first_line(err)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise ConfigError(
            f"{key}={str(path)!r} is corrupted or not a checkpoint ({_first_line(err)})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{key}={str(path)!r} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _origin(checkpoint: dict[str, Any]) -> str:
    record = checkpoint.get(RECORD_KEY)
    if record is None:
        return "an older layout without odelab's record"
    return f"experiment {record.get('task_name')!r} (model {record.get('model')})"


def check_ckpt_path(cfg: DictConfig) -> None:
    """A `ckpt_path` must be a readable checkpoint written by this experiment."""
    if cfg.get("ckpt_path") is not None:
        check_checkpoint(cfg.ckpt_path, cfg)


def check_state_dict(path: str | Path, module: torch.nn.Module, cfg: DictConfig) -> None:
    """The checkpoint's weights must fit the model this run built, key for key, shape for shape."""
    checkpoint = load_checkpoint(path)
    weights = checkpoint["state_dict"]
    saved = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
    built = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(built.keys() - saved.keys())
    unexpected = sorted(saved.keys() - built.keys())
    reshaped = sorted(k for k in built.keys() & saved.keys() if built[k] != saved[k])
    if not (missing or unexpected or reshaped):
        return
    details = []
    groups = (("missing", missing), ("unexpected", unexpected), ("other shapes", reshaped))
    for label, keys in groups:
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            details.append(f"{label}: {', '.join(keys[:3])}{more}")
    raise ConfigError(
        f"ckpt_path={str(path)!r} ({_origin(checkpoint)}) does not fit the model of experiment "
        f"{cfg.get('task_name')!r} ({cfg.model.get('_target_')}): {'; '.join(details)}"
    )


def check_checkpoint(path: str | Path, cfg: DictConfig, key: str = "ckpt_path") -> None:
    """`path` is a readable checkpoint written by this run's experiment."""
    checkpoint = load_checkpoint(path, key)
    record = checkpoint.get(RECORD_KEY)
    if record is None:
        return  # older layout: judged by its weights once the model exists (check_state_dict)
    if record.get("format", 0) > FORMAT:
        raise ConfigError(
            f"{key}={str(path)!r} has record format {record['format']}, newer than "
            f"this odelab's {FORMAT}; update odelab"
        )
    model = cfg.model.get("_target_") if cfg.get("model") else None
    task = cfg.get("task_name")
    if record.get("task_name") != task or (model and record.get("model") != model):
        raise ConfigError(
            f"{key}={str(path)!r} was written by {_origin(checkpoint)}, but this run is "
            f"experiment {task!r} (model {model}); pass a checkpoint of {task!r} or run "
            f"experiment={record.get('task_name')}"
        )


def finished_metrics(cfg: DictConfig, output_dir: Path) -> dict[str, float] | None:
    """With `resume=true`: the metrics of a run that already finished in `output_dir`, else
    None. When `trainer.max_epochs` grew, the finished run trains on from its last
    checkpoint: its metrics move to `metrics.<old epochs>_epochs.json` first, so that an
    interrupted train-on is never taken for finished."""
    path = output_dir / "metrics.json"
    if not cfg.get("resume", False) or not path.is_file():
        return None
    old, new = check_same_settings(cfg, output_dir)
    if new > old and cfg.get("train", True):
        log.info("trainer.max_epochs %s -> %s: the finished run trains on", old, new)
        if is_rank_zero():
            path.replace(path.with_name(f"metrics.{old}_epochs.json"))
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None  # cut short while writing: run again


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint a run starts from: `ckpt_path`, or with `resume=true` its own last.ckpt.

    Without either, a folder that already holds an earlier run's `last.ckpt` is refused
    (a fresh run would overwrite its checkpoints).
    """
    explicit = cfg.get("ckpt_path")
    if explicit is not None or not cfg.get("train", True):
        return explicit
    last = output_dir / "checkpoints" / "last.ckpt"
    if not cfg.get("resume", False):
        if last.is_file():
            raise FolderInUse(
                f"resume=false, but {output_dir} already holds an earlier run's "
                "checkpoints/last.ckpt; pass resume=true to continue that run, or choose "
                "another output folder (hydra.run.dir / hydra.sweep.dir)"
            )
        return None
    if not last.is_file():
        return None
    check_same_settings(cfg, output_dir)
    check_checkpoint(last, cfg, key="resume=true found")
    return str(last)

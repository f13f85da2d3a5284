"""Failure-tolerant sweeps: every job leaves a record, every sweep ends with a summary.

`run.py` turns an exception inside a multirun job into a NaN objective (so the
sweeper, Optuna included, goes on with the other jobs) after `job_failed` has
noted the error. The `SweepSummary` Hydra callback then writes one `job.json`
per job directory and, when the multirun ends, prints a table of every job
(overrides, status, metric, error) and writes it to `<sweep dir>/summary.md`
and `summary.json`.

Job records are files, not memory, because launchers (joblib, submitit) run
jobs in other processes or on other machines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from odelab.distributed import is_rank_zero
from odelab.errors import ConfigError, FolderInUse, OdelabError
from odelab.hydra_setup import register_resolvers
from odelab.runs import load_run
from odelab.tables import fmt_mean_std

# Launchers unpickle this module in their worker processes before a job's
# config is resolved; the config needs odelab's resolvers there too.
register_resolvers()

log = logging.getLogger(__name__)

JOB_RECORD = "job.json"

_failure: dict[str, str] | None = None


def job_failed(err: BaseException) -> float:
    """Note a job's error for its record and return the objective of a failed job (NaN)."""
    global _failure
    if isinstance(err, OdelabError):
        log.error("job failed: %s", err)  # the message already says what to change
    else:
        log.exception("job failed with an unexpected error")
    _failure = {
        "error": f"{type(err).__name__}: {err}",
        "traceback": "".join(traceback.format_exception(err)),
    }
    return math.nan


def check_multirun_strategy(cfg: DictConfig) -> None:
    """Refuse local multi-process DDP inside a multirun, before it forks a second sweep.

    Lightning starts DDP processes by re-running the command line, which in a
    `-m` sweep would start the whole sweep again in every process. Under SLURM
    or torchrun the processes are started outside, and the job runs as usual.
    """
    trainer = cfg.get("trainer") or {}
    strategy = str(trainer.get("strategy", "auto"))
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    several = (isinstance(devices, int) and devices > 1) or nodes > 1 or devices in ("auto", -1)
    if not (strategy.startswith("ddp") and several):
        return
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if SLURMEnvironment.detect() or TorchElasticEnvironment.detect():
        return
    raise ConfigError(
        f"trainer.strategy={strategy} with several devices cannot run inside a local multirun "
        "(Lightning re-runs the command line per process). Run each configuration without -m, "
        "or launch the sweep with hydra/launcher=slurm."
    )


def refuse_used_sweep_dir(config: DictConfig) -> None:
    """A multirun without `resume=true` may not start in a folder that holds an earlier
    sweep's checkpoints (its jobs would overwrite them)."""
    if config.get("resume", False) or not config.get("train", True) or not is_rank_zero():
        return
    sweep_dir = Path(str(config.hydra.sweep.dir))
    used = next(iter(sorted(sweep_dir.glob("**/checkpoints/last.ckpt"))), None)
    if used is not None:
        raise FolderInUse(
            f"resume=false, but hydra.sweep.dir={sweep_dir} already holds an earlier sweep's "
            f"runs ({used.relative_to(sweep_dir)}); pass resume=true to keep finished jobs and "
            "resume the others, or choose another hydra.sweep.dir"
        )


@dataclass
class JobRecord:
    """What a sweep summary shows about one job."""

    num: int
    overrides: list[str]
    status: str  # "completed" or "failed"
    metric_name: str | None = None
    metric: float | None = None
    # Wall seconds of the invocations that reached their end (a resumed job adds them up);
    # an invocation killed outright writes no record, so its time is missing here. Reports
    # that state training time read the per-epoch history instead (`Run.step_seconds`).
    seconds: float | None = None
    error: str | None = None
    output_dir: str = ""
    pid: int | None = None  # the process that ran the job (launchers run jobs in workers)
    traceback: str | None = field(default=None, repr=False)
    direction: str = "minimize"  # how the sweep ranks `metric` (optimized_direction)

    @classmethod
    def load(cls, path: Path) -> JobRecord:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def _as_metric(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def record_from_return(
    config: DictConfig, job_return: JobReturn, seconds: float | None
) -> JobRecord:
    """Build a job's record from what Hydra returned and any error `job_failed` noted."""
    record = JobRecord(
        num=int(config.hydra.job.get("num") or 0),
        overrides=list(job_return.overrides or []),
        status="completed",
        metric_name=config.get("optimized_metric"),
        direction=str(config.get("optimized_direction") or "minimize"),
        seconds=None if seconds is None else round(seconds, 2),
        output_dir=str(config.hydra.runtime.output_dir),
        pid=os.getpid(),
    )
    if job_return.status == JobStatus.FAILED:
        err = job_return._return_value  # Hydra keeps the exception here
        record.status = "failed"
        record.error = f"{type(err).__name__}: {err}"
        record.traceback = "".join(traceback.format_exception(err))
    elif _failure is not None:
        record.status = "failed"
        record.error, record.traceback = _failure["error"], _failure["traceback"]
    else:
        record.metric = _as_metric(job_return._return_value)
    return record


def load_records(sweep_dir: Path) -> list[JobRecord]:
    """Every job record under a sweep folder, in job order."""
    records = [JobRecord.load(p) for p in sweep_dir.glob(f"*/{JOB_RECORD}")]
    return sorted(records, key=lambda r: r.num)


def best_record(records: list[JobRecord], direction: str = "minimize") -> JobRecord | None:
    """The completed job with the best finite metric."""
    scored = [
        r
        for r in records
        if r.status == "completed" and r.metric is not None and math.isfinite(r.metric)
    ]
    if not scored:
        return None
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda r: r.metric)


def _short(text: str | None, width: int = 90) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def format_summary(records: list[JobRecord], sweep_dir: Path, direction: str = "minimize") -> str:
    """A markdown table of the jobs, then the best one and the failure count."""
    metric_name = next((r.metric_name for r in records if r.metric_name), None) or "metric"
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"| job | status | {metric_name} | seconds | overrides | error |",
        "|---:|---|---:|---:|---|---|",
    ]
    for r in records:
        metric = "" if r.metric is None else f"{r.metric:.6g}"
        seconds = "" if r.seconds is None else f"{r.seconds:.1f}"
        overrides = " ".join(r.overrides).replace("|", "\\|")
        error = _short(r.error).replace("|", "\\|")
        lines.append(f"| {r.num} | {r.status} | {metric} | {seconds} | {overrides} | {error} |")
    failed = sum(r.status == "failed" for r in records)
    lines += ["", f"{len(records)} jobs, {len(records) - failed} completed, {failed} failed."]
    best = best_record(records, direction)
    if best is not None:
        lines.append(
            f"Best ({direction} {metric_name}): job {best.num}, {best.metric:.6g}, "
            f"overrides: {' '.join(best.overrides) or '(none)'}"
        )
    lines += seed_table(records, metric_name)
    return "\n".join(lines) + "\n"


def seed_table(records: list[JobRecord], metric_name: str) -> list[str]:
    """Mean ± std over seeds: completed jobs grouped by their overrides other than `seed=`.

    Empty unless some setting ran with two or more seeds. Besides the sweep's
    metric, every `test/...` metric in the jobs' `metrics.json` is averaged.
    """
    groups: dict[tuple[str, ...], list[JobRecord]] = {}
    for r in records:
        if r.status == "completed":
            key = tuple(o for o in r.overrides if not o.startswith("seed="))
            groups.setdefault(key, []).append(r)
    if not any(len(g) > 1 for g in groups.values()):
        return []
    finals = {r.num: _final_metrics(r) for g in groups.values() for r in g}
    test_keys = sorted({k for m in finals.values() for k in m if k.startswith("test/")})
    lines = [
        "",
        "## Mean ± std over seeds",
        "",
        f"| settings | n | {metric_name} | " + " | ".join(test_keys) + " |",
        "|---|---:|" + "---:|" * (1 + len(test_keys)),
    ]
    for key, group in groups.items():
        cells = [fmt_mean_std([r.metric for r in group])]
        cells += [fmt_mean_std([finals[r.num].get(k) for r in group]) for k in test_keys]
        settings = " ".join(key).replace("|", "\\|") or "(defaults)"
        lines.append(f"| {settings} | {len(group)} | " + " | ".join(cells) + " |")
    return lines


def _final_metrics(record: JobRecord) -> dict[str, float]:
    return load_run(record.output_dir).metrics


class SweepSummary(Callback):
    """Hydra callback: a record per job, a summary per multirun.

    Configured in `conf/hydra/default.yaml` under `hydra.callbacks`.
    """

    def __init__(self) -> None:
        self._started: float | None = None
        self._started_wall = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra sets HydraConfig only per job, but sweepers resolve hydra.sweep.dir
        # before any job runs; it interpolates ${task_name} = ${hydra:...}.
        HydraConfig.instance().set_config(config)
        try:
            refuse_used_sweep_dir(config)
        except FolderInUse as err:
            # Before any job: Hydra would otherwise rewrite each job's .hydra/ files and
            # this callback its record before the job itself refused the folder.
            log.error("%s", err)
            raise SystemExit(2) from None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _failure
        _failure = None  # joblib workers run several jobs in one process
        self._started = time.perf_counter()
        self._started_wall = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # DDP processes other than rank zero share the job folder; they must not overwrite.
        if not is_rank_zero():
            return
        seconds = None if self._started is None else time.perf_counter() - self._started
        output_dir = Path(str(config.hydra.runtime.output_dir))
        earlier = output_dir / JOB_RECORD
        metrics = output_dir / "metrics.json"
        # Finished before this invocation began: `resume=true` skipped it.
        skipped = metrics.is_file() and metrics.stat().st_mtime < self._started_wall
        if config.get("resume") and seconds is not None and earlier.is_file():
            # A resumed job adds this invocation's time to the time its record already
            # holds, so the wall time stays the whole run's; a skipped one keeps its record.
            with contextlib.suppress(ValueError, TypeError):
                before = JobRecord.load(earlier)
                if skipped and before.status == "completed" and before.seconds is not None:
                    return  # its record is the run that made it (pid, time): keep it as is
                seconds += before.seconds or 0.0
        record = record_from_return(config, job_return, seconds)
        output_dir.mkdir(parents=True, exist_ok=True)
        record.save(output_dir / JOB_RECORD)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        records = load_records(sweep_dir)
        if not records:
            return
        # The jobs' own optimized_direction; every job of one sweep shares it.
        direction = next((r.direction for r in records if r.metric_name), "minimize")
        summary = format_summary(records, sweep_dir, direction)
        (sweep_dir / "summary.md").write_text(summary)
        (sweep_dir / "summary.json").write_text(
            json.dumps([asdict(r) for r in records], indent=2) + "\n"
        )
        print(summary, flush=True)

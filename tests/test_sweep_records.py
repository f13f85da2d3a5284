"""Sweep summaries, reproduction reports and data loading, without running a sweep."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from omegaconf import open_dict, read_write

from odelab.data.trajectories import RandomWindowSampler
from odelab.errors import ConfigError
from odelab.hydra_setup import CONFIG_DIR, run_group
from odelab.reports import REPRODUCTIONS, load_jobs
from odelab.reports.base import Jobs
from odelab.reports.claims import read_claims
from odelab.sweeps import JobRecord, best_record, format_summary, load_records


def write_job(
    sweep_dir: Path, num: int, seed: int, metrics: dict[str, float] | None, status: str
) -> None:
    job_dir = sweep_dir / str(num)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(f"- experiment=spiral\n- seed={seed}\n")
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics))
    metric = None if metrics is None else metrics["val/traj_mae"]
    error = "SolverError: diverged" if status == "failed" else None
    JobRecord(num, [f"seed={seed}"], status, "val/traj_mae", metric, 1.5, error, str(job_dir)).save(
        job_dir / "job.json"
    )


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    values = {0: 0.30, 1: 0.10, 3: 0.20}
    for num in range(4):
        if num == 2:
            write_job(tmp_path, num, num, None, "failed")
        else:
            v = values[num]
            metrics = {
                "val/traj_mae": v,
                "test/traj_mae": v,
                "test/extrap_mae": 2 * v,
                "test/field_rel_err": v / 2,
                "test/nfe_forward": 50.0,
            }
            write_job(tmp_path, num, num, metrics, "completed")
    return tmp_path


def test_summary_lists_every_job_and_the_best(sweep_dir: Path) -> None:
    records = load_records(sweep_dir)
    assert [r.num for r in records] == [0, 1, 2, 3]
    assert best_record(records).num == 1
    assert best_record(records, "maximize").num == 0
    summary = format_summary(records, sweep_dir)
    assert "4 jobs, 3 completed, 1 failed." in summary
    assert "| 2 | failed |  | 1.5 | seed=2 | SolverError: diverged |" in summary
    assert "Best (minimize val/traj_mae): job 1, 0.1," in summary
    # The three completed seeds of the same setting, averaged (the failed one left out).
    header = next(line for line in summary.splitlines() if line.startswith("| settings |"))
    assert header.split("|")[3].strip() == "val/traj_mae" and "test/extrap_mae" in header
    row = next(line for line in summary.splitlines() if line.startswith("| (defaults) |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "3" and cells[2] == "0.2 ± 0.1"
    assert cells[header.split("|")[1:-1].index(" test/extrap_mae ")] == "0.4 ± 0.2"


def test_spiral_report_mean_and_std_over_seeds(sweep_dir: Path, tmp_path: Path) -> None:
    bench = {
        "device": {"name": "Test CPU"},
        "threads": 1,
        "settings": "--seeds 3",
        "recovery": {
            "baseline_iterations": 2000,
            "runs": {
                "baseline": [
                    {"seed": i, "error": e, "seconds": 40.0, "steps": 2000}
                    for i, e in enumerate([0.1, 0.2, 0.3])
                ],
                "odelab": [
                    {"seed": i, "error": e, "seconds": 40.0, "steps": 900}
                    for i, e in enumerate([0.05, 0.1, 0.12])
                ],
            },
        },
        "overhead": {
            "steps": 400,
            "warmup": 50,
            "repeats": 2,
            "max_weight_difference": 0.0,
            "ms_per_step": {
                "plain": {"seconds": [10.0, 10.0]},
                "odelab": {"seconds": [11.0, 12.0]},
            },
        },
    }
    jobs = Jobs(load_jobs(sweep_dir), {"bench_spiral": bench})
    assert [j.ok for j in jobs] == [True, True, False, True]
    REPRODUCTIONS["spiral"].build(jobs, "paper", tmp_path / "report")
    verdicts = {v.claim: v for v in read_claims(tmp_path / "report" / "claims.json")}
    # The field claim averages the three finished seeds (the failed one left out).
    field = verdicts["spiral_field_recovered"]
    assert field.n == 3 and field.mean == pytest.approx(statistics.fmean([0.15, 0.05, 0.1]))
    assert field.std == pytest.approx(statistics.stdev([0.15, 0.05, 0.1]))
    # The contrast pairs the benchmark's seeds: odelab - reference, -0.05, -0.1, -0.18.
    contrast = verdicts["spiral_vs_reference"]
    assert contrast.n == 3 and contrast.diff == pytest.approx(-0.11)
    assert contrast.mean_b == pytest.approx(0.2)  # the reference recipe, not a typed number


def _first_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of a sweep, one per experiment, each with the first value of every other sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    experiments, fixed = ["spiral"], []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
        if key == "experiment":
            experiments = values or [override.get_value_element_as_str()]
        elif key.startswith("hydra"):
            continue  # launcher settings belong to `run.py -m`, not to one job's config
        else:
            fixed.append(f"{key}={values[0] if values else override.get_value_element_as_str()}")
    return [[f"experiment={e}", *fixed] for e in experiments]


def _check_as_multirun(overrides: list[str]) -> None:
    """What `run.py -m` does first: load the config with the swept keys left out, which
    rejects fixed overrides that the default experiment cannot take (e.g. a missing key)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIG_DIR)))
    loader.load_configuration("run", overrides, run_mode=RunMode.MULTIRUN)


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_every_reproduction_budget_composes(name: str, make_cfg) -> None:
    """A typo in a budget's overrides would surface only after minutes of sweeping: catch it."""
    repro = REPRODUCTIONS[name]
    assert "quick" in repro.budgets  # every reproduction can be checked in minutes
    for budget, sweeps in repro.budgets.items():
        for sweep in sweeps:
            _check_as_multirun(sweep)
            for job in _first_jobs(sweep):
                cfg = make_cfg(*job, subdir=f"{name}_{budget}")
                assert cfg.logger is not None and "csv" in cfg.logger  # reports read the CSV logs


def test_wandb_group_names_the_sweep(make_cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    cfg = make_cfg("logger=wandb")
    assert cfg.logger.wandb.group == "spiral"
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = "logs/spiral/multiruns/2026-01-02_03-04-05"
    HydraConfig.instance().set_config(cfg)
    assert cfg.logger.wandb.group == "spiral-2026-01-02_03-04-05"
    assert run_group("cnf") == "cnf-2026-01-02_03-04-05"


def test_ddp_splits_the_training_windows_between_processes() -> None:
    sampler = RandomWindowSampler(num_windows=500, num_samples=200, seed=3)
    shards = []
    for rank in range(2):
        wrapped = DistributedSamplerWrapper(
            sampler, num_replicas=2, rank=rank, shuffle=True, seed=0
        )
        wrapped.set_epoch(1)
        shards.append(list(wrapped))
    assert len(shards[0]) == len(shards[1]) == 100
    # Together the two processes see exactly the windows one process would.
    assert sorted(shards[0] + shards[1]) == sorted(sampler)


def test_window_sampler_reproducible_per_epoch() -> None:
    sampler = RandomWindowSampler(num_windows=50, num_samples=30, seed=1)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert all(0 <= s < 50 for s in first)


def test_loader_options_reach_the_dataloader(make_cfg) -> None:
    from hydra.utils import instantiate

    cfg = make_cfg("data.num_workers=1", "data.persistent_workers=true", "data.pin_memory=true")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (1, True, True)
    t, windows, _ = next(iter(loader))
    assert windows.shape == (cfg.data.batch_time, cfg.data.batch_size, 2)
    assert torch.equal(
        t, datamodule.trajectory.t[: cfg.data.batch_time] - datamodule.trajectory.t[0]
    )


def test_persistent_workers_need_workers(make_cfg) -> None:
    from hydra.utils import instantiate

    cfg = make_cfg("data.persistent_workers=true")
    with pytest.raises(Exception, match="data.num_workers") as info:
        instantiate(cfg.data)
    assert isinstance(info.value.__cause__ or info.value, ConfigError)


def test_local_ddp_refused_inside_a_multirun(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    from odelab.sweeps import check_multirun_strategy

    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="hydra/launcher=slurm"):
        check_multirun_strategy(make_cfg("trainer=ddp_cpu"))
    check_multirun_strategy(make_cfg("trainer=cpu", subdir="single"))  # one process: fine


@pytest.mark.parametrize("resume", [False, True])
def test_resumed_job_keeps_the_time_of_earlier_invocations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resume: bool
) -> None:
    # A job resumed with resume=true adds its time to the record's; a plain rerun in the same
    # folder starts the count again.
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from odelab import sweeps

    cfg = OmegaConf.create(
        {
            "resume": resume,
            "optimized_metric": "val/nll",
            "hydra": {"job": {"num": 3}, "runtime": {"output_dir": str(tmp_path)}},
        }
    )
    done = JobReturn(overrides=["seed=0"], cfg=cfg, status=JobStatus.COMPLETED)
    done.return_value = 1.0
    clock = iter([100.0, 160.0, 500.0, 502.5])
    monkeypatch.setattr(sweeps.time, "perf_counter", lambda: next(clock))
    callback = sweeps.SweepSummary()
    for _ in range(2):
        callback.on_job_start(cfg)
        callback.on_job_end(cfg, done)
    seconds = JobRecord.load(tmp_path / "job.json").seconds
    assert seconds == (62.5 if resume else 2.5)
    # A job that had finished before the invocation (resume=true skips it, as it does jobs
    # restored from committed records) keeps the time of the run that made it.
    (tmp_path / "metrics.json").write_text("{}")
    os.utime(tmp_path / "metrics.json", (0, 0))
    before = (tmp_path / "job.json").read_bytes()
    clock = iter([900.0, 904.0])
    monkeypatch.setattr(sweeps.os, "getpid", lambda: 4242)  # a later invocation's process
    callback.on_job_start(cfg)
    callback.on_job_end(cfg, done)
    assert JobRecord.load(tmp_path / "job.json").seconds == (62.5 if resume else 4.0)
    # ...and its whole record, byte for byte, so a resumed sweep leaves committed records alone.
    assert ((tmp_path / "job.json").read_bytes() == before) is resume


@pytest.mark.parametrize("key", ["train/loss_step", "train/loss"])
def test_run_counts_training_steps_from_either_loss_key(tmp_path: Path, key: str) -> None:
    """Tasks log the step loss as `train/loss_step` (beside an epoch mean) or `train/loss`
    (step only, the CNF tasks); both give the steps reached (last logged step + 1)."""
    from odelab.runs import load_run

    (tmp_path / "csv").mkdir()
    rows = ["epoch,step,val/nll," + key]
    rows += [f"0,{step},,{1.0 / (step + 1)}" for step in (49, 99)] + ["0,99,2.5,"]
    (tmp_path / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert load_run(tmp_path).train_steps == 100


def test_step_seconds_weight_each_epoch_mean_by_its_steps(tmp_path: Path) -> None:
    """Training time from the history: epoch 0 ends at global step 9 (10 steps of mean
    0.5 s), epoch 1 at step 13 (4 steps of 2 s); epoch 1 logged twice, as a resumed run's
    log repeats it, counts once."""
    from odelab.runs import load_run

    (tmp_path / "csv").mkdir()
    rows = ["epoch,step,train/step_time_epoch,val/acc"]
    rows += ["0,9,0.5,", "0,9,,0.8", "1,13,3.0,", "1,13,2.0,", "1,13,,0.9"]
    (tmp_path / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert load_run(tmp_path).step_seconds == pytest.approx(10 * 0.5 + 4 * 2.0)
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,val/acc\n0,9,0.8\n")
    assert load_run(tmp_path).step_seconds is None

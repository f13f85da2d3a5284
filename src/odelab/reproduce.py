"""The one way a report is made: run a budget's sweeps and benchmarks, keep their records,
render the markdown from those records alone.

Layout for reproduction `<name>` at budget `<budget>`:

- `logs/reproduce/<name>/<budget>/<sweep>/<job>/`: the runs (checkpoints included; not committed);
- `logs/reproduce/<name>/<budget>/bench/*.json`: benchmark records;
- `experiments/reports/<name>_<budget>/records/`: the same tree holding only the record files
  (`odelab.runs.RECORD_FILES`, plots and small JSON), committed beside the report;
- `experiments/reports/<name>_<budget>.md`, its figures in `experiments/reports/<name>_<budget>/`.

The report is always rendered from the committed records, so `tests/test_report_records.py`
can re-render it and require byte-identical markdown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from odelab.errors import FolderInUse
from odelab.hydra_setup import repo_root
from odelab.reports import validity
from odelab.reports.base import (
    RECORDED,
    Jobs,
    Reproduction,
    load_jobs,
    load_sweeps,
    part_record,
    records_dir,
    relative_path,
    report_path,
)
from odelab.runs import RECORD_FILES, RECORD_GLOBS

# A record file larger than this is not kept (records are small by design; plots excepted).
MAX_RECORD_BYTES = 2_000_000


def runs_dir(name: str, budget: str, root: Path | None = None) -> Path:
    return (root or repo_root() / "logs" / "reproduce") / name / budget


def finished_work(root: Path) -> list[str]:
    """What in a budget's run folder took work to make: finished sweeps (their
    `summary.json`), the finished or checkpointed jobs of unfinished ones, and benchmark
    records."""
    sweeps = sorted(p.parent.name for p in root.glob("*/summary.json"))
    job_dirs = [p.parent for p in root.glob("*/*/metrics.json")]
    job_dirs += [p.parent.parent for p in root.glob("*/*/checkpoints/*.ckpt")]
    jobs = sorted({f"{d.parent.name}/{d.name}" for d in job_dirs if d.parent.name not in sweeps})
    bench = sorted(p.name for p in (root / "bench").glob("*") if p.is_file())
    return (
        [f"sweep {name}" for name in sweeps]
        + [f"job {name}" for name in jobs]
        + [f"bench/{name}" for name in bench]
    )


def reads_runs(command: list[str]) -> bool:
    """Whether a benchmark command reads the budget's runs (a `{runs}` argument)."""
    return any("{runs}" in arg for arg in command)


def run_budget(
    repro: Reproduction,
    budget: str,
    extra: list[str],
    resume: bool = False,
    fresh: bool = False,
    keep_benchmarks: bool = False,
) -> float:
    """Run each sweep (`run.py -m`) and benchmark of the budget (`keep_benchmarks`: only the
    benchmarks that read the runs, `{runs}`; the others' committed records are kept); return
    the wall time.

    With `resume`, sweeps that already wrote their summary are skipped and the others run
    with `resume=true` (finished jobs kept, unfinished ones resumed). With `fresh` the
    budget's old runs are removed first, so a report describes these runs and no leftovers.
    With neither, a folder holding anything `finished_work` lists is refused
    (`FolderInUse`), so that rerunning a command never deletes hours of runs; a folder with
    nothing finished in it is removed and run afresh.
    """
    root = runs_dir(repro.name, budget)
    if root.exists() and not resume:
        done = finished_work(root)
        if done and not fresh:
            shown = ", ".join(done[:3]) + (f" and {len(done) - 3} more" if len(done) > 3 else "")
            raise FolderInUse(
                f"{relative_path(root)} holds finished work ({shown}): add --resume "
                "(make: ARGS=--resume) to keep it and run the rest, or --fresh "
                "(ARGS=--fresh) to delete it and start over"
            )
        shutil.rmtree(root)
    start = time.perf_counter()
    for i, overrides in enumerate(repro.budgets[budget]):
        sweep_dir = root / str(i)
        if resume and (sweep_dir / "summary.json").is_file():
            print(f"sweep {i} already finished: {sweep_dir}", flush=True)
            continue
        command = [
            sys.executable,
            str(repo_root() / "run.py"),
            "-m",
            *overrides,
            *extra,
            *(
                ["resume=true"]
                if resume and not any(a.startswith("resume=") for a in extra)
                else []
            ),
            f"hydra.sweep.dir={sweep_dir}",
        ]
        print("running:", " ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=repo_root())
    bench_dir = root / "bench"
    for command in repro.benchmarks.get(budget, []):
        if keep_benchmarks and not reads_runs(command):
            continue
        bench_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            *(
                arg.replace("{bench}", str(bench_dir)).replace("{runs}", str(root))
                for arg in command
            ),
        ]
        print("running:", " ".join(argv), flush=True)
        subprocess.run(argv, check=True, cwd=repo_root())
    return time.perf_counter() - start


def adopt_parts(repro: Reproduction, budget: str, root: Path | None = None) -> list[str]:
    """Move finished runs of the reproduction's other budgets into `budget`'s folder.

    A budget made of other budgets' sweeps (e.g. `cpu`, whose sweeps are those of the
    `cpu_*` budgets) then needs no retraining: each of its sweeps that has not finished
    takes the finished sweep folder (one with `summary.json`) of another budget with the
    same overrides, and its benchmarks take the benchmark folder of another budget that
    runs the same commands (whose own runs are reused, and whose records are kept, when
    they run again). Returns one line per folder moved.
    """
    target = runs_dir(repro.name, budget, root)
    moved = []
    for i, sweep in enumerate(repro.budgets[budget]):
        if (target / str(i) / "summary.json").is_file():
            continue
        source = next(
            (
                folder
                for part, sweeps in repro.budgets.items()
                if part != budget
                for j, other in enumerate(sweeps)
                if other == sweep
                for folder in [runs_dir(repro.name, part, root) / str(j)]
                if (folder / "summary.json").is_file()
            ),
            None,
        )
        if source is not None:
            if (target / str(i)).exists():
                shutil.rmtree(target / str(i))  # an unfinished attempt of the same sweep
            target.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target / str(i))
            moved.append(f"sweep {i} <- {source}")
    for part in repro.benchmarks:
        source = runs_dir(repro.name, part, root) / "bench"
        if part == budget or not source.is_dir():
            continue
        if _benchmarks_within(repro, part, budget):
            for entry in sorted(source.iterdir()):
                if not (target / "bench" / entry.name).exists():
                    (target / "bench").mkdir(parents=True, exist_ok=True)
                    shutil.move(entry, target / "bench" / entry.name)
                    moved.append(f"bench/{entry.name} <- {source}")
    return moved


def _benchmarks_within(repro: Reproduction, part: str, budget: str) -> bool:
    """Whether `budget`'s benchmark records may take `part`'s: `part` runs benchmarks, all
    of them among `budget`'s, on sweeps that are all among `budget`'s (a chunk of it; the
    same command on another chunk's runs checks other models)."""
    others = repro.benchmarks.get(part, [])
    commands = repro.benchmarks.get(budget, [])
    sweeps = repro.budgets[budget]
    return (
        bool(others)
        and all(c in commands for c in others)
        and all(sweep in sweeps for sweep in repro.budgets[part])
    )


def _job_overrides(job: Path) -> list[str] | None:
    """The overrides a recorded job ran with (its `job.json`), or None where none is kept."""
    try:
        return list(json.loads((job / "job.json").read_text())["overrides"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stale(job: Path, sweep: list[str]) -> list[str]:
    """The per-run overrides (`RECORDED`) that `sweep` gives every run and the recorded `job`
    lacks: a record made before a check was added (the ODE validity callback) is stale, and
    `--resume` trains it again rather than keeping it."""
    overrides = _job_overrides(job)
    if overrides is None:
        return []
    have = {o.lower() for o in overrides}  # true/True: one value to Hydra
    return [o for o in RECORDED if o in sweep and o.lower() not in have]


def restore_records(
    repro: Reproduction, budget: str, root: Path | None = None, reports: Path | None = None
) -> list[str]:
    """Put the committed records of finished jobs and benchmarks back where their runs are
    gone (a fresh clone, or a machine that lost `logs/`), so that `--resume` keeps them.

    Each sweep of `budget` takes the finished jobs (those with `metrics.json`) of the
    committed records of this budget, or else of another budget that runs the same
    overrides (a chunk of `cpu`), into job folders that hold neither metrics nor a
    checkpoint; `run.py -m ... resume=true` then skips them as finished and trains only
    the rest; a committed job that lacks a per-run override the sweep now gives (`stale`)
    is left out, so that it trains again. Benchmark records come back likewise, from this
    budget's committed records or from another budget's whose commands this budget runs too.
    Checkpoints are never committed: a check that needs a restored run's weights says so.
    Returns one line per folder or file restored, or left out.
    """
    target = runs_dir(repro.name, budget, root)
    restored = []
    # This budget's own records first, then those of the budgets it is made of.
    parts = [budget] + [part for part in repro.budgets if part != budget]
    for i, sweep in enumerate(repro.budgets[budget]):
        for part in parts:
            for j, other in enumerate(repro.budgets[part]):
                source = records_dir(repro.name, part, reports) / str(j)
                if other != sweep or not source.is_dir():
                    continue
                for job in sorted(p.parent for p in source.glob("*/metrics.json")):
                    dest = target / str(i) / job.name
                    if (dest / "metrics.json").is_file() or any(dest.glob("checkpoints/*.ckpt")):
                        continue
                    if missing := stale(job, sweep):
                        note = f"not {relative_path(job)} ({missing[0]} is new)"
                        restored.append(f"job {i}/{job.name}: {note}")
                        continue
                    shutil.copytree(job, dest, dirs_exist_ok=True)
                    restored.append(f"job {i}/{job.name} <- {relative_path(job)}")
    for part in parts:
        if part != budget and not _benchmarks_within(repro, part, budget):
            continue
        for path in sorted((records_dir(repro.name, part, reports) / "bench").glob("*.json")):
            dest = target / "bench" / path.name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
                restored.append(f"bench/{path.name} <- {relative_path(path)}")
    return restored


def save_records(source: Path, target: Path, finished_only: bool = False) -> int:
    """Copy the record files of every run and benchmark under `source` to `target`.

    `target` is replaced as a whole. With `finished_only` (a budget still running), jobs
    without `metrics.json` are left out rather than recorded as failed, and the committed
    finished jobs without a finished run in `source` stay. Returns the number of files
    copied.
    """
    # With `finished_only`, committed finished jobs that have no finished run here (one
    # training on, one trained again) are kept as they were.
    held = {}
    if finished_only and target.is_dir():
        for job_dir in (p.parent for p in target.glob("*/*/metrics.json")):
            rel = job_dir.relative_to(target)
            if not (source / rel / "metrics.json").is_file():
                held[rel] = {
                    f.relative_to(job_dir): f.read_bytes()
                    for f in job_dir.rglob("*")
                    if f.is_file()
                }
    if target.exists():
        shutil.rmtree(target)
    copied = 0
    for rel, files in held.items():
        for name, data in files.items():
            (target / rel / name).parent.mkdir(parents=True, exist_ok=True)
            (target / rel / name).write_bytes(data)
            copied += 1
    for job_dir in sorted(p.parent.parent for p in source.glob("*/*/.hydra/config.yaml")):
        if finished_only and not (job_dir / "metrics.json").is_file():
            continue
        rel = job_dir.relative_to(source)
        files = [job_dir / name for name in RECORD_FILES]
        files += [f for pattern in RECORD_GLOBS for f in sorted(job_dir.glob(pattern))]
        for path in dict.fromkeys(files):
            if path.is_file() and (
                path.suffix == ".png" or path.stat().st_size <= MAX_RECORD_BYTES
            ):
                out = target / rel / path.relative_to(job_dir)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out)
                copied += 1
    for path in sorted((source / "bench").glob("*.json")):
        out = target / "bench" / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out)
        copied += 1
    return copied


def drop_part_copies(repro: Reproduction, budget: str, reports: Path | None = None) -> list[str]:
    """Delete the sweep folders of `budget`'s records that another budget stores identically
    (so that a combined budget's report reads its parts in place). Returns one line each."""
    dropped = []
    for i in range(len(repro.budgets[budget])):
        own = records_dir(repro.name, budget, reports) / str(i)
        if not own.is_dir():
            continue
        own.rename(own.with_name(f".{i}"))  # hidden while looking for a part's copy
        hidden, part = own.with_name(f".{i}"), part_record(repro, budget, i, reports)
        if part.is_dir() and _same_tree(hidden, part):
            shutil.rmtree(hidden)
            dropped.append(f"sweep {i} = {relative_path(part)}")
        else:
            hidden.rename(own)
    return dropped


def _same_tree(a: Path, b: Path) -> bool:
    files = sorted(f.relative_to(a) for f in a.rglob("*") if f.is_file())
    return files == sorted(f.relative_to(b) for f in b.rglob("*") if f.is_file()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files
    )


def render(repro: Reproduction, budget: str, records: Path, report_dir: Path) -> str:
    """The report's markdown, from the records alone (figures are written into `report_dir`),
    closed by the "Is it an ODE?" section of its ODE runs (`reports.validity`; its
    `validity.json` beside `claims.json`).

    Sweeps missing from `records` are read from the part budget that stores them."""
    if budget not in repro.budgets:
        jobs = load_sweeps(records)
    else:
        reports = records.parent.parent
        sweeps = [part_record(repro, budget, i, reports) for i in range(len(repro.budgets[budget]))]
        own: Jobs = load_sweeps(records) if records.is_dir() else Jobs()
        jobs = Jobs(
            [job for sweep in sweeps if sweep.is_dir() for job in load_jobs(sweep)], own.bench
        )
    text = repro.build(jobs, budget, report_dir)
    checks = validity.arms(jobs)
    if not checks:
        return text
    validity.write_validity(report_dir / "validity.json", checks)
    return text.rstrip("\n") + "\n\n" + validity.section(checks)


def write_report(repro: Reproduction, budget: str) -> Path:
    """Render `<name>_<budget>.md` from its committed records."""
    path = report_path(repro.name, budget)
    text = render(repro, budget, records_dir(repro.name, budget), path.with_suffix(""))
    path.write_text(text)
    return path

"""Run the sweeps and benchmarks behind one paper result and write its markdown report.

    python experiments/reproduce.py spiral --budget quick   # or: make reproduce-spiral budget=quick
    python experiments/reproduce.py spiral --budget quick --report-only   # re-render from records
    python experiments/reproduce.py spiral --budget paper --resume        # skip finished sweeps
    python experiments/reproduce.py spiral --budget quick --fresh   # delete the old runs first
    python experiments/reproduce.py cnf --budget cpu --from-parts   # reuse the cpu_* budgets' runs
    python experiments/reproduce.py robust --budget cpu_fashion_clean --save-finished  # mid-run
    python experiments/reproduce.py spiral --budget paper --rerun-sweeps  # keep the benchmarks

Runs go to logs/reproduce/<name>/<budget>/ (a folder holding finished sweeps or jobs, checkpoints
or benchmark records is refused unless --resume keeps them or --fresh deletes them); their records
(configs, metrics, histories, device, plots, benchmark JSON; no checkpoints) are copied to
experiments/reports/<name>_<budget>/records/ and the report
experiments/reports/<name>_<budget>.md is rendered from those records alone. With --resume or
--from-parts, finished jobs and benchmark records that are committed but whose runs are gone (a
fresh clone) are put back first, so that only the rest is trained; a job recorded before a
check that every run now gets (the ODE validity callback) is not put back, and trains again.
Extra arguments after `--` are passed to every `run.py` (e.g. `-- hydra/launcher=joblib`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from odelab.errors import FolderInUse
from odelab.reports import REPRODUCTIONS
from odelab.reports.base import part_record
from odelab.reproduce import (
    adopt_parts,
    drop_part_copies,
    reads_runs,
    records_dir,
    restore_records,
    run_budget,
    runs_dir,
    save_records,
    write_report,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=sorted(REPRODUCTIONS), help="which result to reproduce")
    parser.add_argument("--budget", default="quick", help="one of the reproduction's budgets")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="do not run; render from the committed records (or from finished runs in logs/)",
    )
    parser.add_argument(
        "--save-finished",
        action="store_true",
        help="do not run; while the budget runs elsewhere, copy the records of its jobs and "
        "benchmarks finished so far (joined with the committed ones) and render the report, "
        "so that they can be committed before the budget ends",
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep finished sweeps, run the rest with resume=true"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete the budget's old runs (finished ones included) and run everything again",
    )
    parser.add_argument(
        "--rerun-sweeps",
        action="store_true",
        help="as --fresh (every run trained again, e.g. after a new measurement is added), but "
        "keep the committed records of the benchmarks that do not read the runs instead of "
        "rerunning them (those that read the runs, `{runs}`, run again)",
    )
    parser.add_argument(
        "--from-parts",
        action="store_true",
        help="first move in the finished sweeps (and benchmark folders) of the other budgets "
        "that run the same overrides, then run the rest (implies --resume)",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything after `--` goes to run.py untouched (argparse would refuse it once
    # the positional name has been read).
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.overrides = extra
    return args


def rerun_refusal(repro, budget: str, records: Path) -> str | None:
    """Why `--rerun-sweeps` cannot rerun `budget` in place (None when it can): a budget that
    reads other budgets' runs would store copies of them, and one without committed records of
    the benchmarks it keeps has nothing to keep."""
    for i in range(len(repro.budgets[budget])):
        if not (records / str(i)).is_dir() and (part := part_record(repro, budget, i)).is_dir():
            return f"sweep {i} is stored in {part}: rerun that budget instead"
    kept = [c for c in repro.benchmarks.get(budget, []) if not reads_runs(c)]
    if kept and not any((records / "bench").glob("*.json")):
        return f"{records / 'bench'} holds no benchmark records to keep: use --fresh"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repro = REPRODUCTIONS[args.name]
    if args.budget not in repro.budgets:
        print(
            f"error: budget={args.budget!r}; {args.name} has {sorted(repro.budgets)}",
            file=sys.stderr,
        )
        return 2
    fresh = args.fresh or args.rerun_sweeps
    if (args.fresh and args.rerun_sweeps) or (
        fresh and (args.resume or args.from_parts or args.report_only or args.save_finished)
    ):
        print(
            "error: --fresh and --rerun-sweeps delete the runs that --resume/--from-parts "
            "keep and --report-only/--save-finished read: give one of them alone",
            file=sys.stderr,
        )
        return 2
    runs, records = runs_dir(args.name, args.budget), records_dir(args.name, args.budget)
    if args.rerun_sweeps and (refused := rerun_refusal(repro, args.budget, records)):
        print(f"error: --rerun-sweeps: {refused}", file=sys.stderr)
        return 2
    if args.save_finished:
        # Committed finished jobs first (so that none is dropped), then the copy.
        for line in restore_records(repro, args.budget):
            print("restored:", line, flush=True)
        if not runs.is_dir():
            print(f"error: nothing in {runs} to save; run the budget first", file=sys.stderr)
            return 2
        copied = save_records(runs, records, finished_only=True)
        print(f"records: {copied} files -> {records}", flush=True)
        print(f"report: {write_report(repro, args.budget)}")
        return 0
    if args.from_parts and not args.report_only:
        for line in adopt_parts(repro, args.budget):
            print("reused:", line, flush=True)
    if (args.resume or args.from_parts) and not args.report_only:
        for line in restore_records(repro, args.budget):
            print("restored:", line, flush=True)
    if not args.report_only:
        resume = args.resume or args.from_parts
        try:
            seconds = run_budget(
                repro,
                args.budget,
                args.overrides,
                resume=resume,
                fresh=fresh,
                keep_benchmarks=args.rerun_sweeps,
            )
        except FolderInUse as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"sweeps and benchmarks took {seconds:.0f} s", flush=True)
        if args.rerun_sweeps and (records / "bench").is_dir():
            for path in sorted((records / "bench").glob("*.json")):
                if not (runs / "bench" / path.name).exists():  # rerun ones are new
                    (runs / "bench").mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, runs / "bench" / path.name)
                    print(f"kept the committed benchmark record: {path}", flush=True)
    if runs.is_dir() and not (args.report_only and records.is_dir()):
        print(f"records: {save_records(runs, records)} files -> {records}", flush=True)
        for line in drop_part_copies(repro, args.budget):
            print("stored once:", line, flush=True)  # the report reads the part's records
    if not records.is_dir():
        print(f"error: no records in {records}; run without --report-only first", file=sys.stderr)
        return 2
    print(f"report: {write_report(repro, args.budget)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

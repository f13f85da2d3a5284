"""Run the sweep behind one paper result and write its markdown report.

    python experiments/reproduce.py spiral --budget quick   # or: make reproduce-spiral budget=quick
    python experiments/reproduce.py spiral --report-only    # rebuild the report from existing runs

Runs go to logs/reproduce/<name>/<budget>/<sweep>/<job>; the report to
experiments/reports/<name>_<budget>.md with its plots beside it. Extra
arguments after `--` are passed to `run.py` (e.g. `-- hydra/launcher=joblib`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from odelab.hydra_setup import repo_root
from odelab.reports import REPRODUCTIONS, load_sweeps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(REPRODUCTIONS), help="which result to reproduce")
    parser.add_argument("--budget", default="quick", help="quick | paper (per-reproduction budgets)")
    parser.add_argument("--report-only", action="store_true", help="do not run; report the existing runs")
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything after `--` goes to run.py untouched (argparse would refuse it once
    # the positional name has been read).
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.overrides = extra
    return args


def run_sweeps(sweeps: list[list[str]], extra: list[str], budget_dir: Path) -> float:
    """Run each sweep (`run.py -m`) into `budget_dir/<i>`; return the wall time."""
    if budget_dir.exists():
        shutil.rmtree(budget_dir)  # a report must describe these sweeps, not leftovers
    start = time.perf_counter()
    for i, overrides in enumerate(sweeps):
        run_sweep([*overrides, *extra], budget_dir / str(i))
    return time.perf_counter() - start


def run_sweep(overrides: list[str], sweep_dir: Path) -> None:
    command = [sys.executable, str(repo_root() / "run.py"), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    print("running:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=repo_root())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repro = REPRODUCTIONS[args.name]
    if args.budget not in repro.budgets:
        print(f"error: budget={args.budget!r}; {args.name} has {sorted(repro.budgets)}", file=sys.stderr)
        return 2
    root = repo_root()
    budget_dir = root / "logs" / "reproduce" / args.name / args.budget
    if not args.report_only:
        seconds = run_sweeps(repro.budgets[args.budget], args.overrides, budget_dir)
        print(f"sweeps took {seconds:.0f} s", flush=True)
    if not budget_dir.is_dir():
        print(f"error: no runs in {budget_dir}; run without --report-only first", file=sys.stderr)
        return 2
    report_path = root / "experiments" / "reports" / f"{args.name}_{args.budget}.md"
    report_dir = report_path.with_suffix("")
    report = repro.build(load_sweeps(budget_dir), args.budget, report_dir)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report)
    print(f"report: {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the dynamics-recovery experiments through `run.py`; print errors, time and memory.

Each run is a separate `python run.py experiment=<name>` process. Wall time is
measured around it; peak memory is the child's maximum resident set size as
the kernel reports it (`os.wait4` -> `ru_maxrss`, KiB on Linux).

Usage:
    python experiments/run_dynamics.py                      # all five runs
    python experiments/run_dynamics.py --only spiral_noisy  # one of them
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNS = {
    "spiral": ["experiment=spiral"],
    "spiral_noisy": ["experiment=spiral", "data.noise_std=0.1"],
    "damped_linear": ["experiment=dynamics_damped_linear"],
    "lotka_volterra": ["experiment=dynamics_lotka_volterra"],
    "van_der_pol": ["experiment=dynamics_van_der_pol"],
}
SHOWN = ("test/traj_mae", "test/extrap_mae", "test/field_rel_err")


def run_one(name: str, overrides: list[str], workdir: Path, extra: list[str]) -> dict[str, float]:
    out = workdir / name
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        *overrides,
        *extra,
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out}",
    ]
    start = time.perf_counter()
    with open(workdir / f"{name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed; see {workdir / f'{name}.log'}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        **{k: metrics[k] for k in SHOWN},
        "seconds": seconds,
        "max_rss_mib": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=sorted(RUNS), help="run only these")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    names = args.only or list(RUNS)
    print(
        f"{'run':<16} {'traj_mae':>9} {'extrap_mae':>10} {'field_rel_err':>13} {'time s':>7} "
        f"{'max RSS MiB':>11}"
    )
    with tempfile.TemporaryDirectory(prefix="odelab_dynamics_") as tmp:
        for name in names:
            r = run_one(name, RUNS[name], Path(tmp), args.overrides)
            print(
                f"{name:<16} {r['test/traj_mae']:9.4f} {r['test/extrap_mae']:10.4f} "
                f"{r['test/field_rel_err']:13.4f} {r['seconds']:7.1f} {r['max_rss_mib']:11.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Reproduction reports built from fabricated run folders (no training): the numbers in the
tables must be the ones the runs wrote, grouped and averaged the way the report says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from odelab.errors import FolderInUse

ROOT = Path(__file__).resolve().parents[1]


def write_job(
    sweep: Path,
    num: int,
    overrides: dict[str, str],
    metrics: dict[str, float] | None,
    config: dict | None = None,
) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()])
    )
    if config is not None:
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def table_row(report: str, first_cell: str) -> list[str]:
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{report}")


def test_reproduce_passes_everything_after_double_dash_to_run_py() -> None:
    import importlib.util

    from odelab.hydra_setup import repo_root

    spec = importlib.util.spec_from_file_location(
        "reproduce", repo_root() / "experiments" / "reproduce.py"
    )
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    args = reproduce.parse_args(
        ["cnf", "--budget", "paper", "--", "hydra/launcher=joblib", "seed=3"]
    )
    assert (args.name, args.budget, args.overrides) == (
        "cnf",
        "paper",
        ["hydra/launcher=joblib", "seed=3"],
    )
    assert reproduce.parse_args(["spiral"]).overrides == []


def test_reproduce_refuses_to_delete_finished_work_with_one_line(monkeypatch, capsys) -> None:
    """A refused budget folder, or --fresh beside --resume, is one error line and exit 2."""
    import importlib.util

    from odelab.hydra_setup import repo_root

    spec = importlib.util.spec_from_file_location(
        "reproduce", repo_root() / "experiments" / "reproduce.py"
    )
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)

    def refuse(*args, **kwargs):
        raise FolderInUse("logs/reproduce/spiral/quick holds finished work (sweep 0): add --resume")

    monkeypatch.setattr(reproduce, "run_budget", refuse)
    assert reproduce.main(["spiral", "--budget", "quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: logs/reproduce/spiral/quick holds")
    for flag in ("--fresh", "--rerun-sweeps"):
        others = ("--resume", "--from-parts", "--report-only", "--save-finished")
        for other in (*others, *({"--fresh", "--rerun-sweeps"} - {flag})):
            assert reproduce.main(["spiral", "--budget", "quick", flag, other]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "--rerun-sweeps delete the runs" in err


def test_rerun_sweeps_trains_again_and_keeps_the_committed_benchmarks(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """`--rerun-sweeps`: every sweep runs again (old runs deleted), a benchmark that does not
    read the runs does not, and the records keep its committed record beside the new jobs."""
    import importlib.util

    from odelab import reproduce as pipeline
    from odelab.hydra_setup import repo_root
    from odelab.reports.base import Reproduction

    spec = importlib.util.spec_from_file_location(
        "reproduce", repo_root() / "experiments" / "reproduce.py"
    )
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    repro = Reproduction(
        name="toy",
        title="toy",
        budgets={"b": [["experiment=a"]]},
        build=lambda jobs, budget, report_dir: "",
        benchmarks={"b": [["experiments/bench.py", "--out", "{bench}"]]},
    )
    runs, records = tmp_path / "logs", tmp_path / "records"
    (records / "bench").mkdir(parents=True)
    (records / "bench" / "bench.json").write_text('{"committed": 1}')
    (runs / "0" / "0").mkdir(parents=True)
    (runs / "0" / "0" / "metrics.json").write_text('{"old": 1}')
    commands: list[list[str]] = []

    def fake_run(command, **kw):
        commands.append(command)
        job = runs / "0" / "0"
        (job / ".hydra").mkdir(parents=True, exist_ok=True)
        (job / ".hydra" / "config.yaml").write_text("seed: 0")
        (job / "metrics.json").write_text('{"new": 1}')

    monkeypatch.setattr(pipeline.subprocess, "run", fake_run)
    monkeypatch.setattr(pipeline, "runs_dir", lambda name, budget, root=None: runs)
    monkeypatch.setattr(reproduce, "REPRODUCTIONS", {"toy": repro})
    monkeypatch.setattr(reproduce, "runs_dir", lambda name, budget: runs)
    monkeypatch.setattr(reproduce, "records_dir", lambda name, budget: records)
    monkeypatch.setattr(reproduce, "write_report", lambda repro, budget: "report.md")

    assert reproduce.main(["toy", "--budget", "b", "--rerun-sweeps"]) == 0
    assert len(commands) == 1 and "experiment=a" in commands[0]  # the sweep, no benchmark
    assert (records / "0" / "0" / "metrics.json").read_text() == '{"new": 1}'
    assert (records / "bench" / "bench.json").read_text() == '{"committed": 1}'
    # A benchmark that reads the runs runs again: its old record would describe deleted runs.
    commands.clear()
    repro.benchmarks["b"].append(["experiments/checks.py", "--runs", "{runs}"])
    assert reproduce.main(["toy", "--budget", "b", "--rerun-sweeps"]) == 0
    assert len(commands) == 2 and "{runs}" not in " ".join(commands[1])
    # Nothing to keep: refused with one line, exit 2, before anything is deleted.
    shutil.rmtree(records / "bench")
    assert reproduce.main(["toy", "--budget", "b", "--rerun-sweeps"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no benchmark records to keep" in err
    assert (runs / "0" / "0" / "metrics.json").is_file()


def test_save_finished_keeps_committed_jobs_and_leaves_out_unfinished_ones(
    tmp_path: Path, monkeypatch
) -> None:
    """`--save-finished` while a budget runs: the records become the committed finished
    jobs plus those finished here since; a job still training is not recorded (as failed)."""
    import importlib.util

    from odelab import reproduce as pipeline
    from odelab.hydra_setup import repo_root

    spec = importlib.util.spec_from_file_location(
        "reproduce", repo_root() / "experiments" / "reproduce.py"
    )
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    logs, reports = tmp_path / "logs", tmp_path / "reports"
    monkeypatch.setattr(
        pipeline, "runs_dir", lambda name, budget, root=None: (root or logs) / name / budget
    )
    real_records = pipeline.records_dir
    monkeypatch.setattr(
        pipeline,
        "records_dir",
        lambda name, budget, reports_=None: real_records(name, budget, reports_ or reports),
    )
    monkeypatch.setattr(reproduce, "runs_dir", pipeline.runs_dir)
    monkeypatch.setattr(reproduce, "records_dir", pipeline.records_dir)
    monkeypatch.setattr(reproduce, "write_report", lambda repro, budget: "report.md")
    committed = reports / "spiral_quick" / "records" / "0" / "0"
    running = logs / "spiral" / "quick" / "0"
    for folder, files in (
        (committed, ["metrics.json"]),
        (committed.with_name("3"), ["metrics.json"]),  # trains on here: kept as committed
        (running / "1", ["metrics.json"]),
        (running / "2", ["checkpoints/last.ckpt"]),
        (running / "3", ["checkpoints/last.ckpt", "metrics.12_epochs.json"]),
    ):
        for name in [".hydra/config.yaml", *files]:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(folder.name)
    assert reproduce.main(["spiral", "--budget", "quick", "--save-finished"]) == 0
    saved = reports / "spiral_quick" / "records" / "0"
    assert sorted(p.parent.name for p in saved.glob("*/metrics.json")) == ["0", "1", "3"]
    assert not (saved / "2").exists() and (saved / "3" / "metrics.json").read_text() == "3"


def test_a_budget_made_of_other_budgets_adopts_their_finished_runs(tmp_path: Path) -> None:
    """`--from-parts`: each sweep of `ab` takes the finished folder of the budget that ran
    the same overrides; unfinished ones and other sweeps stay; benchmark folders move only
    from a budget whose commands `ab` also runs."""
    from odelab.reports.base import Reproduction
    from odelab.reproduce import adopt_parts

    s1, s2, s3 = ["experiment=a"], ["experiment=b"], ["experiment=c"]
    bench = ["experiments/bench.py", "--out", "{bench}"]
    repro = Reproduction(
        name="toy",
        title="toy",
        budgets={"a": [s1], "b": [s3, s2], "c": [s3], "ab": [s1, s2, s3]},
        build=lambda jobs, budget, report_dir: "",
        benchmarks={"a": [], "b": [bench], "c": [["other.py"]], "ab": [bench]},
    )
    root = tmp_path / "logs"
    for budget, sweep, finished in (("a", 0, True), ("b", 1, True), ("c", 0, False)):
        folder = root / "toy" / budget / str(sweep)
        (folder / "0").mkdir(parents=True)
        (folder / "0" / "marker").write_text(f"{budget}/{sweep}")
        if finished:
            (folder / "summary.json").write_text("{}")
    for budget in ("b", "c"):
        (root / "toy" / budget / "bench").mkdir()
        (root / "toy" / budget / "bench" / f"{budget}.json").write_text("{}")

    moved = adopt_parts(repro, "ab", root)

    ab = root / "toy" / "ab"
    assert (ab / "0" / "0" / "marker").read_text() == "a/0"
    assert (ab / "1" / "0" / "marker").read_text() == "b/1"
    assert not (ab / "2").exists()  # budget c's sweep has no summary: not finished
    assert (root / "toy" / "c" / "0" / "0" / "marker").is_file()
    assert (ab / "bench" / "b.json").is_file() and not (ab / "bench" / "c.json").exists()
    assert len(moved) == 3
    assert adopt_parts(repro, "ab", root) == []  # nothing left to take


def test_resume_restores_committed_records_whose_runs_are_gone(tmp_path: Path) -> None:
    """A fresh clone has the committed records but no runs: `--resume` puts the finished
    jobs back (from this budget's records, or a part's with the same overrides) so that
    `resume=true` skips them; unfinished jobs, jobs already here and benchmarks of other
    commands are left alone."""
    from odelab.reports.base import Reproduction
    from odelab.reproduce import restore_records

    s1, s2 = ["experiment=a"], ["experiment=b"]
    bench = ["experiments/bench.py", "--out", "{bench}"]
    repro = Reproduction(
        name="toy",
        title="toy",
        budgets={"a": [s1], "b": [s2], "ab": [s1, s2], "z": [["experiment=z"]]},
        build=lambda jobs, budget, report_dir: "",
        benchmarks={"a": [bench], "b": [["other.py"]], "ab": [bench], "z": [bench]},
    )
    reports, root = tmp_path / "reports", tmp_path / "logs"
    for budget, job, files in (
        ("a", "0", ["metrics.json", ".hydra/config.yaml"]),
        ("a", "1", [".hydra/config.yaml"]),  # failed: no metrics
        ("b", "0", ["metrics.json"]),
        ("b", "1", ["metrics.json"]),
    ):
        for name in files:
            path = reports / f"toy_{budget}" / "records" / "0" / job / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{budget}/{job}")
    for budget in ("a", "b", "z"):  # z: the same command on runs that are not ab's
        (reports / f"toy_{budget}" / "records" / "bench").mkdir(parents=True)
        (reports / f"toy_{budget}" / "records" / "bench" / f"{budget}.json").write_text("{}")
    here = root / "toy" / "ab" / "1" / "1" / "checkpoints" / "last.ckpt"  # training here
    here.parent.mkdir(parents=True)
    here.write_text("")

    restored = restore_records(repro, "ab", root, reports)

    ab = root / "toy" / "ab"
    assert (ab / "0" / "0" / "metrics.json").read_text() == "a/0"
    assert (ab / "0" / "0" / ".hydra" / "config.yaml").read_text() == "a/0"
    assert not (ab / "0" / "1").exists()
    assert (ab / "1" / "0" / "metrics.json").read_text() == "b/0"
    assert not (ab / "1" / "1" / "metrics.json").exists()
    assert (ab / "bench" / "a.json").is_file() and not (ab / "bench" / "b.json").exists()
    assert not (ab / "bench" / "z.json").exists()
    assert len(restored) == 3
    assert restore_records(repro, "ab", root, reports) == []


def test_resume_trains_again_a_committed_job_that_predates_a_per_run_check(
    tmp_path: Path,
) -> None:
    """A committed job run without an override every run now gets (the ODE validity
    callback) is not put back, so that `--resume` trains it with the check; one with it is."""
    from odelab.reports.base import RECORDED, VALIDITY, Reproduction
    from odelab.reproduce import restore_records

    sweep = ["experiment=a", "seed=0,1", *RECORDED]
    repro = Reproduction(
        name="toy", title="toy", budgets={"b": [sweep]}, build=lambda *a: "", benchmarks={}
    )
    reports, root = tmp_path / "reports", tmp_path / "logs"
    old = ["experiment=a", "seed=0", *[o for o in RECORDED if o != VALIDITY]]
    for job, overrides in (("0", old), ("1", ["experiment=a", "seed=1", *RECORDED])):
        folder = reports / "toy_b" / "records" / "0" / job
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text("{}")
        (folder / "job.json").write_text(json.dumps({"overrides": overrides}))

    lines = restore_records(repro, "b", root, reports)

    assert not (root / "toy" / "b" / "0" / "0").exists()
    assert (root / "toy" / "b" / "0" / "1" / "metrics.json").is_file()
    assert any(line.startswith("job 0/0: not") and VALIDITY in line for line in lines)


def test_resume_keeps_finished_sweeps_and_resumes_the_rest(tmp_path: Path, monkeypatch) -> None:
    """`--resume` skips a sweep with a summary and runs the others with resume=true (once,
    whether or not the caller passed it); without it finished work is refused, and removed
    only with `--fresh`."""
    from odelab import reproduce as pipeline
    from odelab.reports.base import Reproduction

    repro = Reproduction(
        name="toy",
        title="toy",
        budgets={"b": [["experiment=a"], ["experiment=b"]]},
        build=lambda jobs, budget, report_dir: "",
        benchmarks={"b": []},
    )
    monkeypatch.setattr(pipeline, "runs_dir", lambda name, budget, root=None: tmp_path / budget)
    commands: list[list[str]] = []
    monkeypatch.setattr(pipeline.subprocess, "run", lambda command, **kw: commands.append(command))
    (tmp_path / "b" / "0").mkdir(parents=True)
    (tmp_path / "b" / "0" / "summary.json").write_text("[]")

    for extra in (["seed=1"], ["resume=true"]):
        commands.clear()
        pipeline.run_budget(repro, "b", extra, resume=True)
        assert len(commands) == 1 and "experiment=b" in commands[0]
        assert [a for a in commands[0] if a.startswith("resume=")] == ["resume=true"]
    # Without --resume a finished sweep or benchmark record is never deleted unasked: the
    # run is refused (exit 2 from reproduce.py) until --fresh says so.
    commands.clear()
    (tmp_path / "b" / "bench").mkdir()
    (tmp_path / "b" / "bench" / "checks.json").write_text("{}")
    with pytest.raises(FolderInUse, match=r"sweep 0, bench/checks.json\).*--resume.*--fresh"):
        pipeline.run_budget(repro, "b", ["seed=1"], resume=False)
    assert commands == [] and (tmp_path / "b" / "0" / "summary.json").is_file()
    pipeline.run_budget(repro, "b", ["seed=1"], resume=False, fresh=True)
    assert len(commands) == 2 and not any(a.startswith("resume=") for c in commands for a in c)
    assert not (tmp_path / "b" / "0").exists()
    # An interrupted sweep's finished or checkpointed jobs count as well.
    for made in ("1/0/metrics.json", "1/1/checkpoints/last.ckpt"):
        (tmp_path / "b" / made).parent.mkdir(parents=True)
        (tmp_path / "b" / made).write_text("{}")
        with pytest.raises(FolderInUse, match=r"\(job 1/[01]\)"):
            pipeline.run_budget(repro, "b", ["seed=1"])
        shutil.rmtree(tmp_path / "b" / "1")
    # Nothing finished (an interrupted first attempt): removed and run afresh, unasked.
    commands.clear()
    (tmp_path / "b" / "1" / "0").mkdir(parents=True)
    pipeline.run_budget(repro, "b", ["seed=1"])
    assert len(commands) == 2 and not (tmp_path / "b" / "1").exists()


def test_planned_jobs_counts_sweep_overrides_only() -> None:
    """A list value in brackets is one value; comma lists multiply, per sweep."""
    from odelab.reports.base import conf_budgets, planned_jobs

    sweeps = [["experiment=a,b", "++m=[14,18]", "seed=0,1,2"], ["x=1", "+p=q"]]
    assert planned_jobs(sweeps) == 2 * 3 + 1
    # The committed, finished MNIST clean chunk holds as many job records as it plans.
    records = ROOT / "experiments/reports/robust_cpu_mnist_clean/records"
    finished = len(list(records.glob("*/*/metrics.json")))
    assert finished and planned_jobs(conf_budgets("robust")[0]["cpu_mnist_clean"]) == finished

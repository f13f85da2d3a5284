"""The combined CNF cpu report reads its parts' records in place (nothing stored twice)."""

from __future__ import annotations

import shutil
from pathlib import Path

from odelab.reports import REPRODUCTIONS
from odelab.reports.pipeline import drop_part_copies, part_record, records_dir

CNF = REPRODUCTIONS["cnf"]


def test_cpu_sweeps_come_from_the_parts_records():
    own = records_dir("cnf", "cpu")
    for i in range(len(CNF.budgets["cpu"])):
        folder = part_record(CNF, "cpu", i)
        assert folder.is_dir(), f"sweep {i} of cnf cpu has no records anywhere"
        assert folder.parent != own, f"sweep {i} is stored in cnf_cpu although a part holds it"


def test_drop_part_copies_keeps_what_differs(tmp_path: Path):
    reports = tmp_path / "reports"
    part = records_dir("cnf", "cpu_select", reports) / "0" / "0"
    part.mkdir(parents=True)
    (part / "metrics.json").write_text('{"a": 1}')
    copy = records_dir("cnf", "cpu", reports)
    shutil.copytree(part.parent, copy / "0")
    assert drop_part_copies(CNF, "cpu", reports) == [f"sweep 0 = {part.parent}"]
    assert not (copy / "0").exists() and part_record(CNF, "cpu", 0, reports) == part.parent
    shutil.copytree(part.parent, copy / "0")
    (copy / "0" / "0" / "metrics.json").write_text('{"a": 2}')  # a different run: kept
    assert drop_part_copies(CNF, "cpu", reports) == []
    assert (copy / "0" / "0" / "metrics.json").read_text() == '{"a": 2}'

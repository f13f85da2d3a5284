"""Robustness models, task and data: ODE nets against hand-written solves, checkpoint
evaluation, SVHN files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from odelab.data.svhn import SVHNDataModule
from odelab.errors import ConfigError, DataMissingError
from odelab.models.odenet import CNN, ODENet, TisODE
from odelab.ode import Sensitivity, Solver
from odelab.train import run


def test_odenet_is_an_euler_loop_over_its_field() -> None:
    torch.manual_seed(0)
    net = ODENet(
        Solver("euler", None, None, step_size=0.1), Sensitivity(), channels=4, downsample=1
    ).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        z = net.stem(net.normalize(x))
        for k in range(10):
            z = z + 0.1 * net.block.field(torch.tensor(0.1 * k), z)
        assert torch.allclose(net(x), net.head(z), atol=1e-5)


def test_tisode_penalty_is_the_field_at_the_end_time() -> None:
    torch.manual_seed(0)
    net = TisODE(Solver("euler", None, None, step_size=0.5), Sensitivity(), channels=4, t_end=2.0)
    x = torch.rand(2, 1, 28, 28)
    net(x)
    with torch.no_grad():
        z = net.stem(net.normalize(x))
        for _ in range(4):
            z = z + 0.5 * net.block.field(None, z)  # time-invariant: t is never read
        expected = net.block.field(None, z).abs().mean()
    assert torch.allclose(net.regularization().detach(), expected, atol=1e-6)
    assert (
        CNN(channels=64).head[-1].in_features == 64
        and 135_000 < sum(p.numel() for p in CNN().parameters()) < 145_000
    )


def test_evaluate_checkpoint_with_attack_rows(make_cfg) -> None:
    small = [
        "model.net.channels=4",
        "data.batch_size=32",
        "data.eval_batch_size=50",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    ]
    trained = run(make_cfg("experiment=robust_cnn", "recipe=fgsm", *small, subdir="train"))
    ckpt = (
        Path(make_cfg("experiment=robust_cnn", subdir="train").paths.output_dir)
        / "checkpoints"
        / "last.ckpt"
    )
    assert ckpt.is_file() and "test/acc" in trained
    metrics = run(
        make_cfg(
            "experiment=robust_cnn",
            "train=false",
            f"ckpt_path={ckpt}",
            "attack=fgsm",
            "attack.strengths=[0.0,0.5]",
            *small,
            subdir="eval",
        )
    )
    assert metrics["test/acc/fgsm_0"] == metrics["test/acc"] == trained["test/acc"]
    assert metrics["test/acc/fgsm_0.5"] <= metrics["test/acc"]


def write_svhn(folder: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    digits = np.arange(n) % 10
    for split in ("train", "test"):
        # The SVHN layout: X is (32, 32, 3, N) and the digit 0 is stored as 10.
        savemat(
            folder / f"{split}_32x32.mat",
            {"X": images.transpose(2, 3, 1, 0), "y": np.where(digits == 0, 10, digits)[:, None]},
        )
    return images, digits


def test_svhn_reads_the_mat_layout(tmp_path: Path) -> None:
    images, digits = write_svhn(tmp_path, 30)
    dm = SVHNDataModule(root=str(tmp_path), val_size=10, test_subset=12)
    dm.setup()
    assert [len(dm.splits[k]) for k in ("train", "val", "test")] == [20, 10, 12]
    x, y = dm.splits["test"].tensors
    assert torch.equal(x, torch.from_numpy(images[:12])) and y.tolist() == digits[:12].tolist()
    batch = dm.on_after_batch_transfer((x[:2], y[:2]), 0)
    assert (
        batch[0].dtype == torch.float32 and batch[0].shape == (2, 3, 32, 32) and batch[0].max() <= 1
    )


def test_svhn_missing_files_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match="data.root.*data.download=true"):
        SVHNDataModule(root=str(tmp_path)).setup()


def test_channel_mismatch_names_the_key(make_cfg, tmp_path: Path) -> None:
    write_svhn(tmp_path, 20)
    cfg = make_cfg(
        "experiment=robust_cnn",
        "data=svhn",
        f"data.root={tmp_path}",
        "data.val_size=5",
        "trainer.fast_dev_run=true",
    )
    with pytest.raises(ConfigError, match="model.net.in_channels=3"):
        run(cfg)


@pytest.mark.slow
def test_masking_checks_write_records_the_report_reads(
    make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """experiments/robust_checks.py on two tiny trained nets: every check is a number, the
    quoted robust accuracy is the minimum over the attack sources, eps 0 is clean."""
    import importlib.util
    import json

    from odelab.hydra_setup import repo_root

    tiny = [
        "model.net.channels=4",
        "data.batch_size=32",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.seed=0",
    ]
    for num, experiment in enumerate(("robust_cnn", "robust_odenet", "tisode")):
        run(make_cfg(f"experiment={experiment}", *tiny, subdir=f"runs/0/{num}"))
    path = repo_root() / "experiments" / "robust_checks.py"
    spec = importlib.util.spec_from_file_location("robust_checks", path)
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    out = tmp_path / "bench"
    args = ["--runs", str(tmp_path / "runs"), "--out", str(out), "--images", "12"]
    args += ["--curve-images", "6", "--curve-steps", "1", "2", "--curve-restarts", "1", "2"]
    assert checks.main([*args, "--square-images", "6", "--queries", "3"]) == 0
    odenet = json.loads((out / "checks_mnist_clean_robust_odenet_seed0.json").read_text())
    cnn = json.loads((out / "checks_mnist_clean_robust_cnn_seed0.json").read_text())
    assert "solvers" in odenet and "solvers" not in cnn
    tisode = json.loads((out / "checks_mnist_clean_tisode_seed0.json").read_text())
    assert odenet["complete"] and cnn["complete"] and tisode["complete"]
    solvers = odenet["solvers"]
    assert set(solvers["accuracy"]) == {"dopri5", "rk4", "euler", "transfer from CNN"}
    assert set(tisode["solvers"]["accuracy"]) == set(solvers["accuracy"])
    # Against ART on every model: the same FGSM, the same PGD images without a random start,
    # and the random-start PGD judged as strong or not.
    for record in (cnn, odenet, tisode):
        ind = record["independent"]
        assert ind["implementation"].startswith("adversarial-robustness-toolbox 1.20")
        assert ind["images"] == 6 and ind["eps"] == record["curve"]["eps"]
        assert ind["fgsm_same"] and ind["fgsm"]["ours"] == ind["fgsm"]["art"]
        # Untrained nets have gradient components near zero whose sign can differ between
        # the two codes' arithmetic: a few pixels may take another step, no more.
        assert ind["pgd_no_start_pixels_differ"] <= 0.01, (record["model"], ind)
        assert ind["pgd_no_start"]["ours"] == ind["pgd_no_start"]["art"]
        only = ind["pgd_disagree"]
        assert ind["pgd_excess_images"] == only["only_ours_correct"] - only["only_art_correct"]
        assert ind["pgd_as_strong"] == (ind["pgd_weaker_p"] >= 0.05)
        assert round(6 * (ind["pgd"]["ours"] - ind["pgd"]["art"])) == ind["pgd_excess_images"]
    # An interrupted record (stages after the grid lost) resumes to the same numbers: each
    # stage seeds its own random starts.
    path = out / "checks_mnist_clean_robust_odenet_seed0.json"
    partial = {k: v for k, v in odenet.items() if k not in ("curve", "square", "solvers")}
    path.write_text(json.dumps({**partial, "complete": False}))
    assert checks.main([*args, "--square-images", "6", "--queries", "3"]) == 0
    assert json.loads(path.read_text()) == odenet
    # Other settings redo the records (here two models at a time).
    assert checks.main([*args, "--square-images", "4", "--queries", "3", "--jobs", "2"]) == 0
    assert json.loads(path.read_text())["square"]["images"] == 4
    # Records belong to the weights, not the folder: moved runs (as `--from-parts` moves a
    # chunk's sweeps) keep their finished records, with the new path; nothing is reloaded.
    before = json.loads(path.read_text())
    (tmp_path / "moved").mkdir()
    (tmp_path / "runs").rename(tmp_path / "moved" / "runs")
    moved = ["--runs", str(tmp_path / "moved" / "runs"), *args[2:]]

    def reload(*_: object, **__: object) -> None:
        raise AssertionError("a finished record was recomputed")

    checks.load_net, load_net = reload, checks.load_net
    assert checks.main([*moved, "--square-images", "4", "--queries", "3"]) == 0
    after = json.loads(path.read_text())
    assert after["run"] != before["run"] and after["run"].endswith("moved/runs/0/1")
    assert {**after, "run": before["run"]} == before
    checks.load_net = load_net
    # A finished run whose checkpoint is gone (its records restored from the committed ones)
    # keeps its finished record: the same settings, the same metrics.json.
    (tmp_path / "moved" / "runs" / "0" / "2" / "checkpoints" / "last.ckpt").unlink()
    tisode_path = out / "checks_mnist_clean_tisode_seed0.json"
    kept = tisode_path.read_text()
    assert checks.main([*moved, "--square-images", "4", "--queries", "3"]) == 0
    assert tisode_path.read_text() == kept
    # Without that record the weights are needed: one line naming the folder and the flag
    # that trains it again, exit status 2.
    tisode_path.unlink()
    capsys.readouterr()
    assert checks.main([*moved, "--square-images", "4", "--queries", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:") and "runs/0/2 " in err
    assert "--retrain-missing" in err
    assert odenet["grid"]["eps0_is_clean"] is True and odenet["images"] == 12
    # Every record the script wrote matches the schema the report loads it with.
    from odelab.reports.robust_record import load_check, stages_left

    for name in ("robust_cnn", "robust_odenet"):
        assert not stages_left(load_check(out / f"checks_mnist_clean_{name}_seed0.json"))
    assert [(p["steps"], p["restarts"]) for p in odenet["curve"]["points"]] == [
        (1, 1),
        (2, 1),
        (1, 2),
        (2, 2),
    ]
    assert odenet["curve"]["eps"] in odenet["grid"]["eps"][1:]


def test_svhn_budget_runs_the_study_columns_on_svhn_files(make_cfg, tmp_path: Path) -> None:
    """`make reproduce-robust budget=svhn`'s overrides train (clean, and with Gaussian noise
    of sigma 35) and attack on SVHN files (here fabricated ones) and log the columns the
    report puts beside the study's two SVHN tables."""
    from odelab.reports.claims import load_claims
    from odelab.reports.robust import BUDGETS
    from odelab.reports.robust import label as _label

    # The columns the study's SVHN claims (conf/claims/yan2020.yaml) are judged on.
    wanted = {
        recipe: {c.metric for c in load_claims("yan2020").values() if c.section == f"svhn_{recipe}"}
        for recipe in ("clean", "gaussian")
    }

    write_svhn(tmp_path, 20)
    skip = ("experiment=", "seed=", "trainer.limit", "logger=")
    recipes = []
    for sweep in BUDGETS["svhn"]:
        fixed = [o for o in sweep if not o.startswith(skip)]
        cfg = make_cfg(
            "experiment=robust_cnn",
            *fixed,
            f"data.root={tmp_path}",
            "data.val_size=5",
            "model.net.channels=4",
            "++attack.sweeps.2.steps=1",
            "trainer.fast_dev_run=true",
        )
        recipe = "gaussian" if cfg.recipe.perturbation else "clean"
        recipes.append(recipe)
        if recipe == "gaussian":
            assert cfg.recipe.perturbation.sigma == 35
        metrics = run(cfg)
        assert wanted[recipe] and wanted[recipe] <= set(metrics)
    assert recipes == ["clean", "gaussian"]
    assert [_label(c) for c in ("fgsm_0.0117647", "fgsm_0.0196078", "fgsm_0.0313725")] == [
        "FGSM 3/255",
        "FGSM 5/255",
        "FGSM 8/255",
    ]
    assert [_label(c) for c in ("fgsm_0.15", "pgd_0.2", "gaussian_15")] == [
        "FGSM .15",
        "PGD .2",
        "s=15",
    ]


def test_scaled_attacks_shrink_the_ball_and_continue_the_random_stream() -> None:
    """`Attack.scaled` (a recipe's warm-up): PGD at half strength keeps its steps with half
    the radius and step, stays in the smaller ball, and successive copies draw new starts."""
    from odelab.attacks import PGD, GaussianNoise

    torch.manual_seed(0)
    net = CNN(channels=4)
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    pgd = PGD(eps=0.3, step_size=0.05, steps=3)
    half = pgd.scaled(0.5)
    assert (half.strength, half.step_size, half.steps) == (0.15, 0.025, 3)
    assert (pgd.strength, pgd.step_size) == (0.3, 0.05)
    first, second = half(net, x, y), pgd.scaled(0.5)(net, x, y)
    assert (first - x).abs().max() <= 0.15 + 1e-6
    assert (first - second).abs().max() > 1e-3  # fresh random starts, not a replay
    assert torch.equal(pgd.scaled(0.0)(net, x, y), x)
    noise = GaussianNoise(100, seed=0)
    a, b = noise.scaled(0.5)(net, x, y), noise.scaled(0.5)(net, x, y)
    assert not torch.equal(a, b)
    twin = GaussianNoise(100, seed=0)
    twin.generator()
    expected = (x + torch.randn(x.shape, generator=twin.generator()) * 50 / 255).clamp(0, 1)
    assert torch.allclose(a, expected, atol=1e-6)
    with pytest.raises(ConfigError, match="factor"):
        pgd.scaled(-1.0)


def test_recipe_warmup_ramps_the_training_attack_per_step(make_cfg) -> None:
    """recipe.warmup_epochs=2 with 3 batches per epoch: the strength after epoch e is
    eps * min(1, 3 (e + 1) / 6), logged per epoch."""
    from odelab.runs import load_run

    cfg = make_cfg(
        "experiment=robust_cnn",
        "recipe=pgd",
        "recipe.warmup_epochs=2",
        "recipe.perturbation.steps=1",
        "model.net.channels=4",
        "data.batch_size=16",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "attack=none",
        "logger=csv",
    )
    run(cfg)
    epochs, strength = load_run(Path(cfg.paths.output_dir)).epoch_series(
        "train/perturbation_strength"
    )
    assert epochs == [0, 1, 2]
    assert strength == pytest.approx([0.15, 0.3, 0.3])
    with pytest.raises(ConfigError, match="recipe.warmup_epochs"):
        run(
            make_cfg("experiment=robust_cnn", "recipe=pgd", "recipe.warmup_epochs=-1", subdir="bad")
        )


def test_masking_checks_retrain_a_run_whose_checkpoint_is_gone(tmp_path: Path) -> None:
    """`--retrain-missing`: a finished run without its checkpoint (checkpoints are never
    committed) trains again from its own overrides and seed; on the CPU every metric comes
    back the same, and the record says so."""
    import importlib.util
    import json
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    from odelab.hydra_setup import repo_root
    from odelab.runs import load_run

    folder = tmp_path / "runs" / "0" / "0"
    tiny = ["experiment=robust_cnn", "trainer=cpu", "model.net.channels=4", "data.batch_size=32"]
    tiny += ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "data.seed=0"]
    tiny += ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(repo_root() / "run.py"), *tiny, f"hydra.run.dir={folder}"]
    subprocess.run(command, check=True, cwd=repo_root(), env=env, capture_output=True)
    before = json.loads((folder / "metrics.json").read_text())
    path = repo_root() / "experiments" / "robust_checks.py"
    spec = importlib.util.spec_from_file_location("robust_checks", path)
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    trained = checks.weights(load_run(folder))
    shutil.rmtree(folder / "checkpoints")
    (folder / "job.json").write_text('{"num": 0, "seconds": 12.5}')  # the sweep's record
    out = tmp_path / "bench"
    args = ["--runs", str(tmp_path / "runs"), "--out", str(out), "--images", "6"]
    args += ["--curve-images", "4", "--curve-steps", "1", "--curve-restarts", "1"]
    args += ["--square-images", "4", "--queries", "2", "--retrain-missing"]
    assert checks.main(args) == 0
    record = json.loads((out / "checks_mnist_clean_robust_cnn_seed0.json").read_text())
    assert record["complete"] and (folder / "checkpoints" / "last.ckpt").is_file()
    assert record["retrained"]["differing"] == {}
    assert record["retrained"]["metrics_compared"] > 3
    assert record["settings"]["weights"] == trained  # the very same tensors, byte for byte
    assert json.loads((folder / "job.json").read_text())["seconds"] == 12.5
    after = json.loads((folder / "metrics.json").read_text())
    assert {k: v for k, v in after.items() if "time" not in k} == {
        k: v for k, v in before.items() if "time" not in k
    }
    # The outcome is kept with the run: a record written by a later invocation (the stop
    # fell between the retraining and the checks) still says the weights were retrained.
    assert json.loads((folder / checks.RETRAINED).read_text()) == record["retrained"]
    name = out / "checks_mnist_clean_robust_cnn_seed0.json"
    name.write_text(json.dumps({k: v for k, v in record.items() if k != "retrained"}))
    assert checks.main(args) == 0
    assert json.loads(name.read_text())["retrained"] == record["retrained"]
    # A stop right after the old folder was emptied: the marker alone is left, and the next
    # invocation (flag or not) trains it and compares with what it held.
    marker = {
        "metrics": before,
        "job": {"num": 0, "seconds": 12.5},
        "device": json.loads((folder / "device.json").read_text()),
        "overrides": yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()),
    }
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / checks.RETRAINING).write_text(json.dumps(marker))
    (out / "checks_mnist_clean_robust_cnn_seed0.json").unlink()
    assert checks.main(args[:-1]) == 0
    assert not (folder / checks.RETRAINING).exists() and (folder / "metrics.json").is_file()
    record = json.loads((out / "checks_mnist_clean_robust_cnn_seed0.json").read_text())
    assert record["complete"] and record["retrained"]["differing"] == {}


def _linear_problem(n: int = 120, seed: int = 0):
    """A two-class linear classifier on 28x28 images with pixels in [0.35, 0.65], so that no
    attack of radius <= 0.3 reaches the [0, 1] box: its worst case in the L-inf ball of radius
    eps has the closed form margin - eps * ||w_y - w_other||_1."""
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(2, 784, generator=gen, dtype=torch.float64) * 0.05)
        net[1].bias.zero_()
    x = 0.35 + 0.3 * torch.rand(n, 1, 28, 28, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[: n // 4] = 1 - y[: n // 4]  # a quarter misclassified already
    w = net[1].weight.detach()
    delta = w[y] - w[1 - y]
    margin = (delta * x.flatten(1)).sum(1)
    return net, x, y, margin, delta.abs().sum(1)


def test_fgsm_and_pgd_reach_the_closed_form_worst_case_of_a_linear_model() -> None:
    """On a linear two-class model FGSM's one step and PGD's iterates both land on the ball's
    worst corner, so their accuracy is the share of images whose margin exceeds
    eps * ||w_y - w_other||_1 (an independent truth for the attacks the checks use)."""
    from odelab.attacks.evaluate import attacked_accuracy
    from odelab.attacks.gradient import FGSM, PGD

    net, x, y, margin, l1 = _linear_problem()
    for eps in (0.0, 0.01, 0.03, 0.1, 0.3):
        truth = float((margin - eps * l1 > 0).double().mean())
        assert attacked_accuracy(net, FGSM(eps), x, y, batch_size=120) == truth, eps
        assert attacked_accuracy(net, PGD(eps, steps=20), x, y, batch_size=120) == truth, eps


def test_masking_grid_stage_matches_the_closed_form_on_a_linear_model() -> None:
    """experiments/robust_checks.py's epsilon grid on the linear model: each FGSM and PGD
    accuracy is the closed-form robust accuracy at that radius (so the grid's monotonicity is
    measured, not assumed)."""
    import importlib.util

    from odelab.hydra_setup import repo_root

    spec = importlib.util.spec_from_file_location(
        "robust_checks", repo_root() / "experiments" / "robust_checks.py"
    )
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    net, x, y, margin, l1 = _linear_problem(seed=1)
    stage = checks.grid_stage(net, x, y, "mnist", 120)
    truth = [float((margin - eps * l1 > 0).double().mean()) for eps in stage["grid"]["eps"]]
    assert stage["grid"]["fgsm"] == truth and stage["grid"]["pgd"] == truth
    assert stage["clean"] == truth[0] and stage["grid"]["eps0_is_clean"] is True
    assert truth[0] > truth[-1]  # the grid spans radii that break images


def test_fgsm_direction_is_the_steepest_ascent_by_finite_differences() -> None:
    """Through an ODE-Net's Euler solve, the loss's directional derivative along FGSM's step,
    measured by central finite differences (forward passes only), is at least that along any
    random sign direction: the input gradient the attack follows is the network's own."""
    import torch.nn.functional as F

    from odelab.attacks.gradient import FGSM

    torch.manual_seed(0)
    net = ODENet(Solver("euler", None, None, step_size=0.25), Sensitivity(), channels=4)
    net = net.double().eval()
    x = 0.35 + 0.3 * torch.rand(1, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([3])
    eps = 1e-2
    d = (FGSM(eps).perturb(net, x, y) - x) / eps
    assert torch.allclose(d.abs(), torch.ones_like(d))  # a full sign step, no box clipping

    def slope(v: torch.Tensor, h: float = 1e-5) -> float:
        with torch.no_grad():
            up = F.cross_entropy(net(x + h * v), y)
            down = F.cross_entropy(net(x - h * v), y)
        return float((up - down) / (2 * h))

    steepest = slope(d)
    gen = torch.Generator().manual_seed(1)
    others = [
        slope(torch.randint(0, 2, x.shape, generator=gen).double() * 2 - 1) for _ in range(20)
    ]
    assert steepest > 0 and steepest >= max(others)

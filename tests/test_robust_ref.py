"""The authors' robustness nets (Yan et al. 2020): exact parameter counts and layout."""

from __future__ import annotations

import pytest
import torch

from odelab.models.robust_ref import AuthorsCNN, AuthorsODENet
from odelab.ode import Sensitivity, Solver


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _odenet() -> AuthorsODENet:
    return AuthorsODENet(Solver("euler", step_size=0.1), Sensitivity())


def test_parameter_counts_match_the_authors() -> None:
    # Counted by hand from the layout: stem 640 + 128 + 65,600 + 128, head 650; residual
    # block 2 x (36,864 + 128); ODE field 2 x (65 x 64 x 9 + 64 + 128).
    assert _count(AuthorsCNN()) == 141_130
    assert _count(_odenet()) == 142_410


@pytest.mark.parametrize("make", [AuthorsCNN, _odenet])
def test_shapes_and_post_activation_features(make) -> None:
    torch.manual_seed(0)
    net = make().eval()
    x = torch.rand(3, 1, 28, 28)
    assert net(x).shape == (3, 10)
    z0 = net.stem(net.normalize(x))
    assert z0.shape == (3, 64, 13, 13)
    assert (z0 >= 0).all()  # the stem ends in ReLU


def test_odenet_field_is_nonnegative_and_cnn_block_is_residual() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 64, 13, 13)
    field = _odenet().field
    assert (field(torch.tensor(0.3), z) >= 0).all()
    block = AuthorsCNN().middle
    with torch.no_grad():
        block.conv2.weight.zero_()
    # With the second conv zeroed, GroupNorm of zeros is its bias (0): the block is identity.
    assert torch.allclose(block(z), z)


@pytest.mark.parametrize(
    ("model", "count"), [("robust_cnn_authors", 141_130), ("robust_odenet_authors", 142_410)]
)
def test_configs_build_the_authors_nets(make_cfg, model: str, count: int) -> None:
    from hydra.utils import instantiate

    cfg = make_cfg("experiment=robust_odenet", f"model={model}", subdir=model)
    assert _count(instantiate(cfg.model.net)) == count


@pytest.mark.slow
def test_robust_run_logs_feature_perturbation(make_cfg) -> None:
    import json
    from pathlib import Path

    from odelab.train import run

    cfg = make_cfg(
        "experiment=robust_odenet",
        "model=robust_odenet_authors",
        "attack=gaussian",
        "logger=none",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        "data.train_subset=32",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "model.net.channels=8",
        subdir="robust_fp",
    )
    run(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    keys = [k for k in metrics if k.startswith("test/feature_perturbation/")]
    assert keys and all(metrics[k] > 0 for k in keys)

"""Constructor argument checks (odelab.checks): types from signatures, ranges from bodies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from conftest import compose_config
from odelab.checks import ArgumentError, check_args, check_types, integer, positive
from odelab.errors import ConfigError
from odelab.hydra_setup import CONFIG_DIR
from odelab.validate import validate


class Base:
    def __init__(self, interval: Literal["epoch", "step"] = "epoch", flag: bool | None = None):
        self.interval = interval


class Child(Base):
    def __init__(self, width: int, scale: float = 1.0, ys: Sequence[float] = (), **kw: object):
        super().__init__(**kw)


TARGET = f"{__name__}.Child"


@pytest.mark.parametrize(
    ("node", "named"),
    [
        ({"width": "wide"}, "model.width='wide' is invalid: expected an integer"),
        ({"width": True}, "model.width=true is invalid: expected an integer"),
        ({"width": 2, "scale": "big"}, "model.scale='big' is invalid: expected a number"),
        ({"width": 2, "ys": [1.0, "a"]}, "model.ys=[1.0, 'a'] is invalid: expected a list"),
        ({"width": 2, "interval": "hour"}, "model.interval='hour' is invalid: expected one of"),
        ({"width": 2, "flag": -1}, "model.flag=-1 is invalid: expected true or false or null"),
    ],
)
def test_types_come_from_the_signature(node: dict, named: str) -> None:
    with pytest.raises(ArgumentError) as err:
        check_types({"_target_": TARGET, **node}, "model")
    assert str(err.value).startswith(named)


def test_types_accept_what_the_signature_allows() -> None:
    # An int where a float is declared, null anywhere, a base's keyword through **kw.
    check_types(
        {"_target_": TARGET, "width": 2, "scale": 3, "ys": [1, 2.5], "interval": "step"}, "m"
    )
    check_types({"_target_": TARGET, "width": None}, "m")
    # Nested targets are checked at their own key.
    with pytest.raises(ArgumentError, match=r"^model\.inner\.width='x'"):
        check_types({"inner": {"_target_": TARGET, "width": "x"}}, "model")


def test_ranges_name_the_key() -> None:
    rules = {"hidden": integer(1), "lr": positive()}
    check_args("model", rules, {"hidden": 3, "lr": 0.1, "other": -1})
    with pytest.raises(
        ConfigError, match=r"^model\.hidden=0 is invalid: expected an integer >= 1$"
    ):
        check_args("model", rules, {"hidden": 0})
    with pytest.raises(ConfigError, match=r"^lr=inf is invalid: expected a finite number > 0$"):
        check_args("", rules, {"lr": float("inf")})


def test_every_experiment_passes_the_start_up_checks(tmp_path: Path) -> None:
    for path in sorted((Path(CONFIG_DIR) / "experiment").glob("*.yaml")):
        validate(compose_config([f"experiment={path.stem}"], tmp_path / path.stem), data=False)


def test_an_interpolated_value_names_its_source(tmp_path: Path) -> None:
    cfg = compose_config(
        ["experiment=dynamics_lotka_volterra", "data.batches_per_epoch=0"], tmp_path
    )
    with pytest.raises(ConfigError, match=r"T_max=0 .*data\.batches_per_epoch"):
        validate(cfg, data=False)


def test_unused_solver_settings_are_still_checked(tmp_path: Path) -> None:
    # planar_flow solves no ODE; a typo in its solver group is still one line naming the key.
    cfg = compose_config(["experiment=planar_flow", "solver.rtol=-1"], tmp_path)
    with pytest.raises(ConfigError, match=r"^solver\.rtol=-1 is invalid"):
        validate(cfg, data=False)


def test_sensitivity_and_trainer_ranges(tmp_path: Path) -> None:
    cases = {
        "sensitivity.rtol=-1e-4": "sensitivity.rtol=-0.0001 is invalid",
        "sensitivity.seminorm=yes": "sensitivity.seminorm='yes' is invalid",
        "trainer.log_every_n_steps=0": "trainer.log_every_n_steps=0 is invalid",
        "trainer.max_epochs=ten": "trainer.max_epochs='ten' is invalid",
        "seed=1.5": "seed=1.5 is invalid",
    }
    for override, message in cases.items():
        extra = ["sensitivity=adjoint"] if override.startswith("sensitivity") else []
        cfg = compose_config(["experiment=spiral", *extra, override], tmp_path)
        with pytest.raises(ConfigError) as err:
            if override.startswith("sensitivity"):
                from odelab.train import build

                build(cfg.sensitivity)
            else:
                validate(cfg, data=False)
        assert str(err.value).startswith(message), (override, str(err.value))

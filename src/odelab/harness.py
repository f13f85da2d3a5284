"""The one way to launch a run in-process: compose the config `python run.py <overrides>`
would build, then train and test it quietly.

Tests, benchmarks and report scripts use `compose` and `run_quietly` (or `launch`, both in
one call); `run.py` itself is the way from a shell. Finished run folders are read back
with `odelab.runs.load_run`.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, open_dict

from odelab.hydra_setup import CONFIG_DIR, register_resolvers

# No progress bars or model summaries: in-process runs print only what they are asked to.
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def compose(
    overrides: list[str],
    output_dir: Path,
    *,
    logger: str | None = "csv",
    quiet: bool = True,
    log_dir: Path | None = None,
) -> DictConfig:
    """The config `python run.py <overrides>` would build, writing into `output_dir`.

    Args:
        overrides: `run.py` overrides, applied after the harness's own.
        output_dir: the run folder (Hydra's `hydra.runtime.output_dir`).
        logger: the `logger=` choice (csv keeps the per-epoch history the run reader
            reads); None leaves the config's own.
        quiet: no progress bar or model summary.
        log_dir: `paths.log_dir` (default: the config's).

    Hydra's own fields are set as a real run would set them, so `${hydra:...}`
    interpolations resolve.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    register_resolvers()
    head = ([f"logger={logger}"] if logger else []) + (QUIET if quiet else [])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("run", overrides=[*head, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if log_dir is not None:
            cfg.paths.log_dir = str(log_dir)
    return cfg


def run_quietly(cfg: DictConfig) -> dict[str, float]:
    """`odelab.train.run` with its summary and Lightning's chatter kept off the console."""
    from odelab.train import run

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return run(cfg)


@dataclass
class Launched:
    """What `launch` returns: the final metrics, the wall time and the config that ran."""

    metrics: dict[str, float]
    seconds: float
    config: DictConfig


def launch(overrides: list[str], output_dir: Path, **compose_options: object) -> Launched:
    """Compose and run one configuration in this process."""
    cfg = compose(overrides, output_dir, **compose_options)  # type: ignore[arg-type]
    start = time.perf_counter()
    metrics = run_quietly(cfg)
    return Launched(metrics, time.perf_counter() - start, cfg)

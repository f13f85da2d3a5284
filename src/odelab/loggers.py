"""Loggers that never block a run.

W&B goes online only when an API key and the network are both there; otherwise
it writes an offline run into the run folder, to upload later with `wandb sync`.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.loggers import Logger, WandbLogger

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


class _DropLightningTips(logging.Filter):
    """Drop Lightning's advertisement lines ("💡 Tip: ... try installing litlogger").

    They are Lightning's own, say nothing about the run and appear on every fit; odelab
    cannot switch them off through any Trainer argument.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_lightning() -> None:
    """Every Lightning log line printed once, without Lightning's adverts and one stale warning.

    `import lightning` gives its `lightning` logger a console handler of its own, and that
    logger also propagates to the root logger, which Hydra's job logging already sends to the
    console and the job's log file: every INFO line appeared twice. Removing Lightning's own
    handler leaves Hydra's, so each line shows once and still reaches the log file.
    Idempotent: safe to call once per job of a multirun.
    """
    root = logging.getLogger("lightning")
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLightningTips())
    # Lightning's own `_pytree.py` calls a torch API that torch has deprecated (LeafSpec);
    # nothing odelab calls or can change, and harmless until Lightning updates it.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """Return 'online', 'offline' or 'disabled' for a requested mode."""
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode in ("offline", "disabled", "dryrun"):
        return "offline" if env_mode == "dryrun" else env_mode
    if mode != "auto":
        return mode
    if _has_wandb_key() and _reachable(WANDB_HOST):
        return "online"
    return "offline"


def wandb_logger(
    project: str,
    save_dir: str,
    mode: Literal["auto", "online", "offline", "disabled"] = "auto",
    group: str | None = None,
    tags: list[str] | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A WandbLogger that is offline unless a key and the network are there."""
    resolved = resolve_wandb_mode(mode)
    if resolved != "online":
        # Never let wandb open a login prompt or wait on the network.
        os.environ["WANDB_MODE"] = resolved
        os.environ.setdefault("WANDB_SILENT", "true")
        log.info("W&B logs offline into %s/wandb (upload later with `make sync`)", save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=resolved != "online",
        group=group,
        tags=list(tags or []),
        **kwargs,
    )
    # Lightning always hands wandb.init `anonymous=None`, a setting wandb has deprecated and
    # warns about whatever its value; left out (before the run starts), None changes nothing.
    init = getattr(logger, "_wandb_init", {})
    if init.get("anonymous", False) is None:
        del init["anonymous"]
    return logger


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so their files are complete even after an error."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            if wandb.run is not None:
                wandb.finish()

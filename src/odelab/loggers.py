"""Loggers that never block a run.

W&B goes online only when an API key and the network are both there; otherwise
it writes an offline run into the run folder, to upload later with `wandb sync`.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


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
    mode: str = "auto",
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
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=resolved != "online",
        group=group,
        tags=list(tags or []),
        **kwargs,
    )


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so their files are complete even after an error."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            if wandb.run is not None:
                wandb.finish()

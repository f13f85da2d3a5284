"""DataLoader options that every DataModule takes from its data config.

Keys: `num_workers`, `pin_memory`, `persistent_workers`, passed unchanged to the
training DataLoader (and to evaluation loaders where those iterate a dataset).
"""

from __future__ import annotations

from odelab.errors import ConfigError


def check_loader_options(num_workers: int, persistent_workers: bool) -> None:
    """Reject DataLoader options that torch would refuse with a less helpful message."""
    if num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
    if persistent_workers and num_workers == 0:
        raise ConfigError(
            "data.persistent_workers=true needs worker processes: set data.num_workers > 0 "
            "or data.persistent_workers=false"
        )

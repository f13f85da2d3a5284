"""DataLoader options that every DataModule takes from its data config.

Keys: `num_workers`, `pin_memory`, `persistent_workers`, passed unchanged to the
training DataLoader (and to evaluation loaders where those iterate a dataset).
"""

from __future__ import annotations

from odelab.errors import ConfigError


def loader_options(num_workers: int, pin_memory: bool, persistent_workers: bool) -> dict[str, object]:
    """The DataLoader keyword arguments of a data config, checked.

    Rejects options that torch would refuse (or silently ignore) with a message
    naming the key to fix.
    """
    if num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
    if persistent_workers and num_workers == 0:
        raise ConfigError(
            "data.persistent_workers=true needs worker processes: set data.num_workers > 0 "
            "or data.persistent_workers=false"
        )
    return {
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": persistent_workers,
    }

"""Exceptions that carry a message meant for the person running an experiment.

`run.py` prints these without a traceback: each one names what to change.
"""


class OdelabError(Exception):
    """Base class for errors whose message tells the user how to fix the run."""


class ConfigError(OdelabError, ValueError):
    """A configuration value is invalid; the message names the key to change."""


class FolderInUse(ConfigError):
    """A run was pointed at a folder that holds another run: checkpoints a fresh run would
    overwrite, or a run made with other settings than those it would resume with."""


class DataMissingError(OdelabError, FileNotFoundError):
    """Data files are absent; the message names the option that provides them."""


class SolverError(OdelabError, RuntimeError):
    """An ODE solve diverged, produced non-finite values or ran away."""


def check_sizes(prefix: str = "model.net", **sizes: int) -> None:
    """Raise a ConfigError naming the first size `<prefix>.<key>` that is not a positive int."""
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{prefix}.{key} must be an integer >= 1, got {value!r}")

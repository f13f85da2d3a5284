"""Exceptions that carry a message meant for the person running an experiment.

`run.py` prints these without a traceback: each one names what to change.
"""


class OdelabError(Exception):
    """Base class for errors whose message tells the user how to fix the run."""


class ConfigError(OdelabError, ValueError):
    """A configuration value is invalid; the message names the key to change."""


class DataMissingError(OdelabError, FileNotFoundError):
    """Data files are absent; the message names the option that provides them."""


class SolverError(OdelabError, RuntimeError):
    """An ODE solve diverged, produced non-finite values or ran away."""

"""Benchmark-only code shared by the scripts in `experiments/` (not part of the odelab package:
no training run imports it): the framework-overhead measurement, the host-read counter and the
timing helper. The scripts import it as `bench.<module>` (their folder is on `sys.path`; the
tests get it from `pythonpath` in pyproject.toml)."""

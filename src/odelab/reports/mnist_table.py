"""The pieces of the MNIST report (Chen et al. 2018, Table 1 and Figure 3) that are not the
report itself: a run's Table 1 row name and data sizes, and the plateau test of a validation
curve (the benchmark records' schemas: `odelab.records.mnist`)."""

from __future__ import annotations

from odelab.ode.config import ADAPTIVE_METHODS
from odelab.reports.stats import resolvable
from odelab.runs import Run

ORDER = ["1-layer MLP", "ResNet", "RK-Net", "ODE-Net"]


def model_label(run: Run) -> str:
    """Table 1 row of a run, from its net class and solver."""
    net = str(run.config.model.net._target_).rsplit(".", 1)[-1]
    if net == "ODENet":
        return "ODE-Net" if run.config.solver.method in ADAPTIVE_METHODS else "RK-Net"
    return {"MLPClassifier": "1-layer MLP"}.get(net, net)


def data_sizes(run: Run) -> tuple[str, int, int]:
    """Dataset label, training images and test images the run actually used."""
    data, limit = run.config.data, run.config.trainer.get("limit_test_batches")
    split = bool(data.offline_test_split)
    train = 10_000 - data.val_size - data.test_size if split else 60_000 - data.val_size
    train = min(train, int(data.get("train_subset") or train))
    test = data.test_size if split else 10_000
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
        test = min(test, limit * int(data.eval_batch_size))
    elif isinstance(limit, float) and limit <= 1.0:
        test = int(test * limit)
    return f"{data.dataset} test-set split" if split else data.dataset, train, test


# A model has reached its plateau when its validation error over the last quarter of
# epochs is no more than this much (relative) below its best before that quarter.
PLATEAU_TOLERANCE = 0.05


def plateau_state(
    epochs: list[int], values: list[float], images: int | None = None
) -> tuple[str, str]:
    """('plateau' | 'improving' | 'unresolved' | 'unknown', the words for the report).

    'unresolved': the last quarter gained more than the relative tolerance, but by fewer
    validation images (of `images`) than could be significant (so neither a plateau nor an
    improvement is shown)."""
    if len(values) < 4:
        return "unknown", "too few epochs to tell"
    cut = len(values) - max(1, len(values) // 4)
    before, last = min(values[:cut]), min(values[cut:])
    gain = (before - last) / before if before > 0 else 0.0
    fewer, share = round((images or 0) * (before - last)), f"last quarter {100 * gain:.1f} %"
    above = f"the last quarter's best error {100 * -gain:.1f} % above the best before"
    if gain < 0:
        return "plateau", f"plateau (no gain: {above})"
    if gain <= PLATEAU_TOLERANCE:
        return "plateau", f"plateau ({share})"
    if images and not resolvable(fewer):
        errors = f"{fewer} error{'' if fewer == 1 else 's'} of {images} validation images"
        return "unresolved", f"improving by {errors}, not significant ({share})"
    return "improving", f"still improving ({share})"

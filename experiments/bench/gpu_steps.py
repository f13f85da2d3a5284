"""Part 5 of experiments/bench_speed.py: ODE-Net (dopri5, adjoint) and RK-Net (rk4, direct)
training steps on a GPU (or any device named), eager vs each fast path vs the plain torchdiffeq
step of the same network: ms per step, NFE per step and the held-out accuracy, per seed."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from odelab.ode import Sensitivity, Solver
from odelab.profiling import describe_device
from odelab.reports.claims import load_claims

# The speed-up targets of the best fast path over eager: data of conf/claims/checks.yaml.
_TARGETS = load_claims("checks")


# ---------------------------------------------------------------------------
# 5. GPU training steps: ODE-Net and RK-Net, eager vs each fast path


class _CountedCalls(nn.Module):
    """Counts a field's evaluations on the host (no device reads) for the plain step."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field
        self.calls = 0

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        self.calls += 1
        return self.field(t, z)


class PlainBlock(nn.Module):
    """The ODE block as torchdiffeq's examples write it (`odeint`, or `odeint_adjoint` for the
    adjoint) on the same field with the same solver settings: no odelab code in the solve."""

    def __init__(self, field: nn.Module, solver: Solver, sensitivity: Sensitivity):
        super().__init__()
        self.func = _CountedCalls(field)
        self.kwargs = solver.odeint_kwargs()
        self.adjoint = sensitivity.adjoint
        if self.adjoint:
            self.kwargs.update(sensitivity.odeint_adjoint_kwargs(solver))
        self.register_buffer("t", torch.tensor([0.0, 1.0]))
        self.forward_calls = 0

    def forward(self, x: Tensor) -> Tensor:
        solve = odeint_adjoint if self.adjoint else odeint
        out = solve(self.func, x, self.t, **self.kwargs)[1]
        self.forward_calls = self.func.calls  # the rest are the adjoint's, in backward()
        return out


# model -> (solver settings, sensitivity, speed-up target of the best fast path over eager,
# variants: name -> solver overrides, or None for the plain torchdiffeq step).
GPU_MODELS: dict[str, tuple[dict[str, Any], str, float, dict[str, dict[str, Any] | None]]] = {
    "ODE-Net (dopri5, adjoint)": (
        {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3},
        "adjoint",
        _TARGETS["fast_odenet_speedup"].threshold,
        {
            "eager": {},
            "compiled field": {"compile_field": True},
            "plain torchdiffeq": None,
        },
    ),
    "RK-Net (rk4, direct)": (
        {"method": "rk4", "rtol": None, "atol": None, "step_size": 0.25},
        "direct",
        _TARGETS["capture_rknet_speedup"].threshold,
        {
            "eager": {},
            "compiled field": {"compile_field": True},
            "captured": {"capture": True},
            "captured + compiled field": {"capture": True, "compile_field": True},
            "plain torchdiffeq": None,
        },
    ),
}


def gpu_data(
    roots: list[Path], device: torch.device, held_out: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, str]:
    """(train images, train labels, held-out images, held-out labels, description) on
    `device`: the offline MNIST split (`data=mnist_t10k`: train 7000, validation 1000) when
    its files are found, else random MNIST-shaped tensors (accuracy then means nothing)."""
    from odelab.data.images import ImageDataModule
    from odelab.errors import DataMissingError

    for root in roots:
        data = ImageDataModule(
            root=str(root), offline_test_split=True, val_size=1000, test_size=2000, seed=0
        )
        try:
            data.setup("fit")
        except DataMissingError:
            continue
        else:
            (xt, yt), (xv, yv) = data.splits["train"].tensors, data.splits["val"].tensors
            xv, yv = xv[:held_out], yv[:held_out]

            def images(x: Tensor) -> Tensor:
                return x.unsqueeze(1).float().div_(255.0).to(device)

            text = (
                f"MNIST offline split (data=mnist_t10k): {len(yt)} training images, "
                f"{len(yv)} held-out validation images"
            )
            return images(xt), yt.to(device), images(xv), yv.to(device), text
    gen = torch.Generator().manual_seed(0)
    n = 2048
    x = torch.rand(n + held_out, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (n + held_out,), generator=gen).to(device)
    text = "random MNIST-shaped tensors (no MNIST files found): accuracies are not meaningful"
    return x[:n], y[:n], x[n:], y[n:], text


def _gpu_net(
    settings: dict[str, Any], sensitivity: str, variant: dict[str, Any] | None, channels: int
) -> nn.Module:
    from odelab.models.odenet import ODENet

    solver = Solver(**settings, **(variant or {}))
    net = ODENet(solver, Sensitivity(sensitivity), channels=channels)
    if variant is None:  # the same field (same initial weights) in torchdiffeq's own loop
        net.middle = PlainBlock(net.block.field, Solver(**settings), Sensitivity(sensitivity))
    return net


def _nfe(net: nn.Module) -> tuple[int, int]:
    """Forward and backward evaluations since the last reset, read on the host."""
    middle = net.middle
    if isinstance(middle, PlainBlock):
        return middle.forward_calls, middle.func.calls - middle.forward_calls
    return middle.nfe_forward, middle.nfe_backward


def _reset_nfe(net: nn.Module) -> None:
    middle = net.middle
    if isinstance(middle, PlainBlock):
        middle.func.calls = middle.forward_calls = 0
    else:
        middle.reset_nfe()


def gpu_variant(
    model: str,
    variant: str,
    seed: int,
    data: tuple[Tensor, Tensor, Tensor, Tensor, str],
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Train one variant for `args.gpu_steps` SGD steps at batch `args.gpu_batch` (same seed:
    same initial weights and batches for every variant), timing steps after
    `args.gpu_warmup` in blocks of `args.gpu_block` (one device synchronisation per block,
    so launches overlap as in training); then score the held-out images."""
    from odelab.profiling import wait_for_device

    settings, sensitivity, _, variants = GPU_MODELS[model]
    x_train, y_train, x_held, y_held, _ = data
    torch.manual_seed(seed)
    net = _gpu_net(settings, sensitivity, variants[variant], args.gpu_channels).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randint(len(y_train), (args.gpu_steps, args.gpu_batch), generator=gen)
    order = order.to(device)
    blocks: list[float] = []
    nfe_forward = nfe_backward = counted = 0
    net.train()
    start = time.perf_counter()
    warm_s = 0.0
    block_start = 0.0
    for step in range(args.gpu_steps):
        timed = step >= args.gpu_warmup
        if timed and (step - args.gpu_warmup) % args.gpu_block == 0:
            wait_for_device(device)
            block_start = time.perf_counter()
            if step == args.gpu_warmup:
                warm_s = block_start - start  # the first steps: compilation and capture
        _reset_nfe(net)
        idx = order[step]
        loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if timed:
            forward, backward = _nfe(net)
            nfe_forward, nfe_backward = nfe_forward + forward, nfe_backward + backward
            counted += 1
            if (step - args.gpu_warmup + 1) % args.gpu_block == 0:
                wait_for_device(device)
                blocks.append((time.perf_counter() - block_start) / args.gpu_block)
    wait_for_device(device)
    train_s = time.perf_counter() - start
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y_held), 500):
            logits = net(x_held[i : i + 500])
            correct += int((logits.argmax(1) == y_held[i : i + 500]).sum())
    # The plain torchdiffeq block has no fast paths, so no fast-path state.
    fast_state = getattr(net.middle, "fast_state", {})
    return {
        "seed": seed,
        # Whether CUDA graphs were captured (solver.capture) or capture fell back.
        "graphs": len(fast_state.get("graphs", {})),
        "capture_failed": bool(fast_state.get("capture_failed")),
        "ms_per_step": [1e3 * b for b in blocks],
        "median_ms": 1e3 * statistics.median(blocks) if blocks else None,
        "nfe_forward": nfe_forward / max(counted, 1),
        "nfe_backward": nfe_backward / max(counted, 1),
        "warmup_s": warm_s,
        "train_s": train_s,
        "final_loss": float(loss.detach()),
        "accuracy": correct / len(y_held),
    }


def gpu_steps(args: argparse.Namespace) -> dict[str, Any]:
    """ODE-Net and RK-Net training steps on `args.gpu_device`, every variant side by side,
    seeds outermost (each seed's variants run back to back under the same conditions)."""
    import torch._dynamo.config

    # Every compiled variant shares ConvODEField.forward's compiled code; training and
    # evaluation shapes and grad modes add entries. Keep them all compiled (the default
    # limit of 8 would quietly fall back to eager in the later seeds).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    device = torch.device(args.gpu_device)
    print(
        f"\n== 5. training steps on {device}: batch {args.gpu_batch}, {args.gpu_channels} "
        f"channels, {args.gpu_steps} steps per variant and seed"
    )
    data = gpu_data(mnist_roots(args), device, args.gpu_held_out)
    print(f"  data: {data[4]}")
    models: dict[str, Any] = {}
    for model, (settings, sensitivity, target, variants) in GPU_MODELS.items():
        models[model] = {
            "solver": settings,
            "sensitivity": sensitivity,
            "target": target,
            "variants": {v: [] for v in variants},
        }
    for seed in args.gpu_seeds:
        for model, entry in models.items():
            for variant in entry["variants"]:
                try:
                    result = gpu_variant(model, variant, seed, data, args, device)
                except Exception as err:  # noqa: BLE001 - a failed fast path is a result too
                    first = str(err).splitlines()[0][:200] if str(err) else ""
                    result = {"seed": seed, "error": f"{type(err).__name__}: {first}"}
                entry["variants"][variant].append(result)
                if "error" in result:
                    print(f"  seed {seed}  {model:<26} {variant:<26} failed: {result['error']}")
                    continue
                print(
                    f"  seed {seed}  {model:<26} {variant:<26} {result['median_ms']:8.2f} ms/step"
                    f"   NFE {result['nfe_forward']:5.1f} + {result['nfe_backward']:5.1f}   "
                    f"acc {result['accuracy']:.3f}   first steps {result['warmup_s']:.1f} s",
                    flush=True,
                )
    return {
        "device": describe_device(device),
        "batch": args.gpu_batch,
        "channels": args.gpu_channels,
        "steps": args.gpu_steps,
        "warmup": args.gpu_warmup,
        "block": args.gpu_block,
        "seeds": list(args.gpu_seeds),
        "optimizer": "SGD lr 0.1, momentum 0.9, no augmentation",
        "data": data[4],
        "held_out": len(data[3]),
        "models": models,
    }


def mnist_roots(args: argparse.Namespace) -> list[Path]:
    """Where part 5 looks for the offline MNIST files: `--mnist-root`, else the
    `data=mnist_t10k` config's folder (../shared/data/mnist) and copies inside the checkout
    (shared/data/mnist, data/mnist), which is what travels to a lent GPU machine."""
    if args.mnist_root is not None:
        return [args.mnist_root]
    from odelab.hydra_setup import repo_root

    root = repo_root()
    return [root.parent / "shared" / "data" / "mnist", root / "shared" / "data" / "mnist"] + [
        root / "data" / "mnist"
    ]

"""Benchmarks behind ``make bench``: ``python -m invcap.bench`` writes ``results/bench_inn.json``.

Three parts, timed in one run (n = 384, float32, 2 threads unless told otherwise):

- **layer** (batch 4096): one ``LULinear`` forward against a plain ``x @ W.T`` with W precomputed,
  its inverse against the same matmul and against a dense ``torch.linalg.solve``; nflows'
  ``LULinear`` (the peer) with the same W on the same input; the layer as it was before the
  speed work (``reference_*``: W = L U per call from two scatters, right-side solves); the depth-8
  ``InvertibleMLP`` in both directions. Targets: forward <= 1.3x the matmul, inverse <= 2.0x,
  both faster than nflows.
- **train_step** (batch 256, depth 6 and 4): one optimisation step as ``train_captioning`` takes
  it (forward MSE, optionally the inverse MSE, backward, Adam), with the step's shared
  ``net.factors()`` against the reference layer (no sharing); the peer: nflows' layers with the
  same activations.
- **captioning_loop**: steps per second of ``invcap.captioning.train_captioning`` itself on random
  data (depth 6 forward-only, depth 6 and depth 4 with the inverse loss).

Calls of one group are interleaved (call 1 of every variant, then call 2, ...), so that load
from other processes on a shared machine slows every variant alike; each timing keeps its
median, min and max. nflows is imported from a bench-only folder (``--deps``, default
``.bench-deps``; ``make bench`` installs it there with ``pip --no-deps``); without it the bench
says so and times everything else. ``--device cuda --dtypes float32,bfloat16`` is the GPU run
(``scripts/gpu_bench.sh``); ``--quick`` shrinks every size for a smoke test.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import sys
import time
import types
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from invcap.inn import InvertibleMLP, LULinear
from invcap.io import read_json, replace_marked_block, repo_root, results_dir, write_json_atomic, write_text_atomic
from invcap.repro import run_record, seed_everything

__all__ = ["BenchConfig", "time_interleaved", "load_nflows_lulinear", "reference_forward", "reference_inverse",
           "bench_layer", "bench_train_step", "bench_captioning_loop", "run", "render", "render_cuda", "render_report", "update_readme", "README_BLOCKS",
           "main"]

TARGETS = {"forward_vs_matmul": 1.3, "inverse_vs_matmul": 2.0, "forward_vs_nflows": 1.0, "inverse_vs_nflows": 1.0}
LAYER_RATIOS = {  # name: (numerator, denominator), both timings of the layer table
    "forward_vs_matmul": ("forward", "plain_matmul"), "inverse_vs_matmul": ("inverse", "plain_matmul"),
    "forward_vs_fused_linear": ("forward", "fused_linear"), "inverse_vs_dense_solve": ("inverse", "dense_solve"),
    "forward_vs_nflows": ("forward", "nflows_forward"), "inverse_vs_nflows": ("inverse", "nflows_inverse"),
    "forward_vs_reference": ("forward", "reference_forward"), "inverse_vs_reference": ("inverse", "reference_inverse"),
    "reference_forward_vs_matmul": ("reference_forward", "plain_matmul"),
    "reference_inverse_vs_matmul": ("reference_inverse", "plain_matmul"),
    "nflows_forward_vs_matmul": ("nflows_forward", "plain_matmul"),
    "nflows_inverse_vs_matmul": ("nflows_inverse", "plain_matmul")}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass(frozen=True)
class BenchConfig:
    features: int = 384
    batch: int = 4096            # the layer table
    depth: int = 8               # the InvertibleMLP of the layer table
    train_batch: int = 256       # the training-shaped step (the study's batch)
    train_depths: tuple[int, ...] = (6, 4)
    threads: int = 2
    repeats: int = 20            # calls per timing in the layer table (median of >= 20)
    warmup: int = 2              # untimed calls of every variant first
    net_repeats: int = 10        # calls per timing of the depth-8 network and of a training step
    loop_steps: int = 20         # timed steps per train_captioning call
    loop_repeats: int = 2
    loop_cases: tuple[tuple[int, float], ...] = ((6, 0.0), (6, 1.0), (4, 1.0))   # (depth, inverse_weight)
    device: str = "cpu"
    dtype: str = "float32"

    @classmethod
    def quick(cls, **overrides) -> "BenchConfig":
        """Tiny sizes: every code path in a few seconds (a smoke test, not a measurement)."""
        small = dict(features=16, batch=64, depth=2, train_batch=8, train_depths=(2,), repeats=2, warmup=1,
                     net_repeats=1, loop_steps=2, loop_repeats=1, loop_cases=((2, 1.0),))
        return cls(**{**small, **overrides})


# --- timing ----------------------------------------------------------------------------------

def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2,
                     sync: Callable[[], None] = lambda: None) -> dict[str, dict[str, float]]:
    """Wall-clock ms per call of every function, calls interleaved across the functions:
    {name: {median_ms, min_ms, max_ms, repeats, ms (every call, in order)}}. ``sync`` waits for
    the device (CUDA)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(1e3 * (time.perf_counter() - start))
    return {name: {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t), "repeats": repeats,
                   "ms": t} for name, t in times.items()}


def _sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


# --- the peer: nflows' LULinear from the bench-only folder ------------------------------------

def load_nflows_lulinear(deps: Path) -> tuple[type | None, str]:
    """(nflows.transforms.lu.LULinear, how it was imported) or (None, why not).

    The bench-only folder goes on sys.path here and nowhere else. nflows' package
    ``__init__`` files import every transform (some need optional packages); when that fails,
    the three modules LULinear needs are loaded under empty package stubs instead."""
    if not (Path(deps) / "nflows" / "transforms" / "lu.py").is_file():
        return None, (f"nflows is not installed in {deps} (`make bench` installs it there with "
                      f"`pip install --no-deps --target {deps} nflows`); the peer is left out")
    if str(deps) not in sys.path:
        sys.path.insert(0, str(deps))
    try:
        return importlib.import_module("nflows.transforms.lu").LULinear, "imported nflows.transforms.lu"
    except Exception as err:  # an optional dependency of another transform, a broken __init__
        first = f"{type(err).__name__}: {err}"
    for name in [m for m in sys.modules if m == "nflows" or m.startswith("nflows.")]:
        del sys.modules[name]
    try:
        for name, sub in (("nflows", ""), ("nflows.transforms", "transforms"), ("nflows.utils", "utils")):
            stub = types.ModuleType(name)
            stub.__path__ = [str(Path(deps) / "nflows" / sub)]
            sys.modules[name] = stub
        cls = importlib.import_module("nflows.transforms.lu").LULinear
        return cls, f"loaded nflows.transforms.lu without the package __init__ files ({first})"
    except Exception as err:
        for name in [m for m in sys.modules if m == "nflows" or m.startswith("nflows.")]:
            del sys.modules[name]
        return None, f"nflows could not be imported ({first}; without __init__: {type(err).__name__}: {err})"


def _nflows_copy(cls: type, layer: LULinear) -> torch.nn.Module:
    """nflows' LULinear holding exactly our layer's W = L U and bias (checked by the caller)."""
    n = layer.features
    peer = cls(n, identity_init=False)
    with torch.no_grad():
        f = layer.factors()
        rows, cols = torch.tril_indices(n, n, offset=-1)
        peer.lower_entries.copy_(f.lower[rows, cols])
        upper_rows, upper_cols = torch.triu_indices(n, n, offset=1)
        peer.upper_entries.copy_(f.upper[upper_rows, upper_cols])
        k = layer.diagonal.detach() - peer.eps        # nflows: diag = softplus(raw) + eps > 0
        if bool((k <= 0).any()):
            raise ValueError("nflows' LULinear needs a positive diagonal")
        peer.unconstrained_upper_diag.copy_(k + torch.log(-torch.expm1(-k)))  # softplus^-1
        peer.bias.copy_(layer.bias)
    return peer


# --- the layer before this work (commit d7b7802), as the "before" column ----------------------

def _reference_factors(layer: LULinear) -> tuple[torch.Tensor, torch.Tensor]:
    n = layer.features
    rows, cols = torch.tril_indices(n, n, offset=-1, device=layer.lower_entries.device)
    zeros = layer.lower_entries.new_zeros(n * n)
    lower = zeros.scatter(0, rows * n + cols, layer.lower_entries).view(n, n) + torch.eye(n).to(zeros)
    upper = zeros.scatter(0, cols * n + rows, layer.upper_entries).view(n, n) + torch.diag(layer.diagonal.to(zeros))
    return lower, upper


def reference_forward(layer: LULinear, x: torch.Tensor) -> torch.Tensor:
    """The forward as before: L and U from two scatters, W = L U, one F.linear (every call)."""
    lower, upper = _reference_factors(layer)
    return F.linear(x, (lower @ upper).to(x.dtype), layer.bias.to(x.dtype))


def reference_inverse(layer: LULinear, y: torch.Tensor) -> torch.Tensor:
    """The inverse as before: two right-side triangular solves on (y - b)."""
    lower, upper = _reference_factors(layer)
    z = torch.linalg.solve_triangular(lower.T.to(y.dtype), y - layer.bias.to(y.dtype), upper=True, left=False,
                                      unitriangular=True)
    return torch.linalg.solve_triangular(upper.T.to(y.dtype), z, upper=False, left=False)


class _Chain:
    """An InvertibleMLP's activations between other layer functions ``forward(i, x)`` and
    ``inverse(i, y)``: the reference layer's, or nflows' layers (``layers``, their own parameters)."""

    def __init__(self, net: InvertibleMLP, forward: Callable, inverse: Callable, layers: torch.nn.Module | None = None):
        self.net, self.forward, self.backward, self.layers = net, forward, inverse, layers

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.net.depth):
            x = self.forward(i, x)
            x = self.net.activation(x) if self.net._has_activation_after(i) else x
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for i in reversed(range(self.net.depth)):
            y = self.net.activation.inverse(y) if self.net._has_activation_after(i) else y
            y = self.backward(i, y)
        return y


def _reference_chain(net: InvertibleMLP) -> _Chain:
    return _Chain(net, lambda i, x: reference_forward(net.linears[i], x), lambda i, y: reference_inverse(net.linears[i], y))


def _nflows_chain(cls: type, net: InvertibleMLP) -> _Chain:
    layers = torch.nn.ModuleList(_nflows_copy(cls, linear) for linear in net.linears)
    return _Chain(net, lambda i, x: layers[i](x)[0], lambda i, y: layers[i].inverse(y)[0], layers)


# --- the parts --------------------------------------------------------------------------------

def _runnable(fns: dict[str, Callable[[], object]]) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """The functions that run (one trial call each) and, for the others, why not (e.g. an
    operation without a bfloat16 kernel)."""
    ok, failed = {}, {}
    for name, fn in fns.items():
        try:
            fn()
            ok[name] = fn
        except (RuntimeError, NotImplementedError, ValueError) as err:
            failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return ok, failed


def _ratio(timings: dict, name: str, base: str) -> dict[str, float] | None:
    """name's time over base's: the median, min and max of the per-round ratios (the calls of a
    round ran back to back, so load from other processes hits both alike), and the ratio of the
    two medians for comparison."""
    if name not in timings or base not in timings:
        return None
    rounds = [a / b for a, b in zip(timings[name]["ms"], timings[base]["ms"])]
    return {"median": statistics.median(rounds), "min": min(rounds), "max": max(rounds),
            "of_medians": timings[name]["median_ms"] / timings[base]["median_ms"]}


class _OtherLoad:
    """CPU time that other processes took while the bench ran, as a share of the whole machine
    (from /proc/stat minus this process's own CPU time; None where /proc is missing)."""

    def __enter__(self) -> "_OtherLoad":
        self.start = (self._busy(), os.times(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        busy0, times0, wall0 = self.start
        busy1, times1, wall1 = self._busy(), os.times(), time.perf_counter()
        own = (times1.user + times1.system) - (times0.user + times0.system)
        self.fraction = None if busy0 is None or busy1 is None else \
            max(0.0, (busy1 - busy0 - own) / ((wall1 - wall0) * (os.cpu_count() or 1)))

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)) / os.sysconf("SC_CLK_TCK")


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-30)).max())


def _with_rounds(timings: dict) -> dict:
    return {k: {**v, "ms": [round(t, 4) for t in v["ms"]]} for k, v in timings.items()}


def bench_layer(cfg: BenchConfig, nflows_cls: type | None) -> dict:
    """The layer table (see the module docstring)."""
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    sync, n = _sync_for(device), cfg.features
    seed_everything(0, threads=cfg.threads)
    layer = LULinear(n, init_std=0.3)
    with torch.no_grad():
        layer.bias.normal_(0.0, 0.1)
    peer = None if nflows_cls is None else _nflows_copy(nflows_cls, layer).to(device, dtype)
    layer = layer.to(device, dtype)
    x = torch.randn(cfg.batch, n, device=device).to(dtype)
    with torch.no_grad():
        W, b = layer.weight.clone(), layer.bias.clone()
        y = layer(x)
        fns = {"plain_matmul": lambda: x @ W.T, "fused_linear": lambda: F.linear(x, W, b),
               "forward": lambda: layer(x), "inverse": lambda: layer.inverse(y),
               "dense_solve": lambda: torch.linalg.solve(W, (y - b).T).T,
               "reference_forward": lambda: reference_forward(layer, x),
               "reference_inverse": lambda: reference_inverse(layer, y)}
        if peer is not None:
            fns.update(nflows_forward=lambda: peer(x), nflows_inverse=lambda: peer.inverse(y))
        fns, unsupported = _runnable(fns)
        checks = {}
        if "inverse" in fns:
            checks["inverse_round_trip_relative_error"] = _relative_error(layer.inverse(y), x)
        if peer is not None and "nflows_forward" in fns:
            checks["nflows_forward_vs_ours_relative_error"] = _relative_error(peer(x)[0], y)
        if peer is not None and "nflows_inverse" in fns and "inverse" in fns:
            checks["nflows_inverse_vs_ours_relative_error"] = _relative_error(peer.inverse(y)[0], layer.inverse(y))
        timings = time_interleaved(fns, cfg.repeats, cfg.warmup, sync)

        seed_everything(0, threads=cfg.threads)
        net = InvertibleMLP(n, cfg.depth, init_std=0.3)
        peer_net = None if nflows_cls is None else _nflows_chain(nflows_cls, net)
        net.to(device, dtype)
        y_net = net(x)
        reference = _reference_chain(net)
        net_fns = {"mlp_forward": lambda: net(x), "mlp_inverse": lambda: net.inverse(y_net),
                   "reference_mlp_forward": lambda: reference(x), "reference_mlp_inverse": lambda: reference.inverse(y_net)}
        if peer_net is not None:
            peer_net.layers.to(device, dtype)
            net_fns.update(nflows_mlp_forward=lambda: peer_net(x), nflows_mlp_inverse=lambda: peer_net.inverse(y_net))
        net_fns, net_unsupported = _runnable(net_fns)
        net_timings = time_interleaved(net_fns, cfg.net_repeats, cfg.warmup, sync)
    ratios = {name: r for name, (a, b) in LAYER_RATIOS.items() if (r := _ratio(timings, a, b)) is not None}
    net_ratios = {f"mlp_{d}_vs_{peer}": r for d in ("forward", "inverse") for peer in ("reference", "nflows")
                  if (r := _ratio(net_timings, f"mlp_{d}", f"{peer}_mlp_{d}")) is not None}
    return {"timings": _with_rounds(timings), "ratios": ratios,
            "network": {"depth": cfg.depth, "timings": _with_rounds(net_timings), "ratios": net_ratios},
            "checks": checks, "unsupported": {**unsupported, **net_unsupported}}


def _train_steps(cfg: BenchConfig, depth: int, inverse: bool, nflows_cls: type | None) -> dict[str, Callable[[], float]]:
    """One optimisation step per call, as train_captioning's inner loop takes it, for every variant.
    Each variant trains its own copy of the same network with its own Adam state."""
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    n, batch = cfg.features, cfg.train_batch
    gen = torch.Generator().manual_seed(0)
    z_all = torch.randn(max(4 * batch, 512), n, generator=gen).to(device)
    y_all = (z_all @ torch.randn(n, n, generator=gen).to(device) / math.sqrt(n)).contiguous()
    autocast = dtype == torch.bfloat16   # bfloat16: mixed precision (parameters and losses stay float32)
    torch.manual_seed(0)
    base = InvertibleMLP(n, depth, init_std=0.3)
    nets = {"shared_factors": base, "unshared": _copy(base), "reference": _copy(base)}
    models: dict[str, object] = {"shared_factors": base, "unshared": nets["unshared"],
                                 "reference": _reference_chain(nets["reference"])}
    if nflows_cls is not None:
        peer = _nflows_chain(nflows_cls, base)
        nets["nflows"], models["nflows"] = peer.layers, peer
    for module in nets.values():
        module.to(device, dtype if not autocast else torch.float32)
    optimizers = {name: torch.optim.Adam(module.parameters(), lr=1e-4) for name, module in nets.items()}

    def step(name: str) -> float:
        index = torch.randint(z_all.shape[0], (batch,), device=device)
        z, y = z_all[index], y_all[index]
        if not autocast:
            z, y = z.to(dtype), y.to(dtype)
        model = models[name]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if name == "shared_factors":
                factors = model.factors()
                prediction = model(z, factors=factors)
                back = (lambda: model.inverse(y, factors=factors)) if inverse else None
            else:
                prediction = model(z)
                back = (lambda: model.inverse(y)) if inverse else None
            loss = torch.mean((prediction.float() - y.float()) ** 2)
            if back is not None:
                loss = loss + torch.mean((back().float() - z.float()) ** 2)
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[name].step()
        return loss.item()

    return {name: (lambda name=name: step(name)) for name in models}


def _copy(net: InvertibleMLP) -> InvertibleMLP:
    clone = InvertibleMLP(net.features, net.depth, negative_slope=net.activation.negative_slope)
    clone.load_state_dict(net.state_dict())
    return clone


def bench_train_step(cfg: BenchConfig, nflows_cls: type | None) -> dict:
    """ms per training step (batch ``train_batch``) for every depth, without and with the inverse loss."""
    device = torch.device(cfg.device)
    rows, unsupported = [], {}
    for depth in cfg.train_depths:
        for inverse in (False, True):
            seed_everything(0, threads=cfg.threads)
            fns, failed = _runnable(_train_steps(cfg, depth, inverse, nflows_cls))
            unsupported.update({f"depth{depth}_inverse{int(inverse)}_{k}": v for k, v in failed.items()})
            timings = time_interleaved(fns, cfg.net_repeats, cfg.warmup, _sync_for(device))
            row = {"depth": depth, "inverse_loss": inverse, "batch": cfg.train_batch, "timings": _with_rounds(timings),
                   "steps_per_s": {k: 1e3 / v["median_ms"] for k, v in timings.items()}}
            row["ratios"] = {f"shared_factors_vs_{k}": r for k in ("unshared", "reference", "nflows")
                             if (r := _ratio(timings, "shared_factors", k)) is not None}
            rows.append(row)
    return {"rows": rows, "unsupported": unsupported}


def bench_captioning_loop(cfg: BenchConfig) -> dict:
    """Steps per second of train_captioning itself (float32), from the difference of a longer and
    a shorter run (so set-up does not count), repeated ``loop_repeats`` times, cases interleaved."""
    from invcap.captioning import CaptioningConfig, train_captioning

    gen = torch.Generator().manual_seed(0)
    n = cfg.features
    latents = torch.randn(max(4 * cfg.train_batch, 512), n, generator=gen)
    captions = latents[:, None, :] @ torch.randn(n, n, generator=gen) / math.sqrt(n) + 0.1 * torch.randn(
        latents.shape[0], 5, n, generator=gen)
    cases = list(cfg.loop_cases)
    warm = 3

    def seconds(depth: int, weight: float, steps: int) -> float:
        config = CaptioningConfig(depth=depth, inverse_weight=weight, steps=steps, batch_size=cfg.train_batch,
                                  device=cfg.device, init_std=0.3, lr=1e-4)
        start = time.perf_counter()
        train_captioning(latents, captions, config, progress=False)
        return time.perf_counter() - start

    per_step: dict[tuple, list[float]] = {case: [] for case in cases}
    for case in cases:
        seconds(*case, warm)
    for _ in range(cfg.loop_repeats):
        for case in cases:
            per_step[case].append(1e3 * (seconds(*case, warm + cfg.loop_steps) - seconds(*case, warm)) / cfg.loop_steps)
    rows = []
    for (depth, weight), ms in per_step.items():
        median = statistics.median(ms)
        rows.append({"depth": depth, "inverse_weight": weight, "batch": cfg.train_batch, "steps": cfg.loop_steps,
                     "ms_per_step": {"median_ms": median, "min_ms": min(ms), "max_ms": max(ms), "repeats": len(ms)},
                     "steps_per_s": 1e3 / median})
    return {"rows": rows}


# --- one run -----------------------------------------------------------------------------------

def _machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def _targets_met(layer: dict) -> dict[str, bool | None]:
    return {name: (None if name not in layer["ratios"] else layer["ratios"][name]["median"] <= bound)
            for name, bound in TARGETS.items()}


def run(cfg: BenchConfig, deps: Path, dtypes: tuple[str, ...] = ("float32",), loop: bool = True) -> dict:
    """Every part in one run; the first dtype's numbers are the headline, others go to ``by_dtype``."""
    with warnings.catch_warnings():
        # nflows' inverse calls the deprecated torch.triangular_solve: its warning is not ours to act on
        warnings.filterwarnings("ignore", message=".*triangular_solve is deprecated")
        return _run(cfg, deps, dtypes, loop)


def _run(cfg: BenchConfig, deps: Path, dtypes: tuple[str, ...], loop: bool) -> dict:
    nflows_cls, nflows_note = load_nflows_lulinear(deps)
    seed_everything(0, threads=cfg.threads)
    machine = {**_machine(), "load_average_1min_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    seconds, others, by_dtype = {}, {}, {}

    def timed(part: str, fn: Callable[[], dict]) -> dict:
        start = time.perf_counter()
        with _OtherLoad() as load:
            out = fn()
        seconds[part], others[part] = time.perf_counter() - start, load.fraction
        return out

    for dtype in dtypes:
        part_cfg = replace(cfg, dtype=dtype)
        layer = timed(f"layer_{dtype}", lambda: bench_layer(part_cfg, nflows_cls))
        train = timed(f"train_step_{dtype}", lambda: bench_train_step(part_cfg, nflows_cls))
        by_dtype[dtype] = {"layer": layer, "train_step": train, "targets_met": _targets_met(layer)}
    report = {"benchmark": "inn", **by_dtype[dtypes[0]], "dtype": dtypes[0]}
    if len(dtypes) > 1:
        report["by_dtype"] = {d: v for d, v in by_dtype.items() if d != dtypes[0]}
    if loop:
        report["captioning_loop"] = timed("captioning_loop", lambda: bench_captioning_loop(replace(cfg, dtype="float32")))
    machine["other_processes_cpu_share"] = others
    machine["load_average_1min_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    nflows_version = None
    if nflows_cls is not None:
        info = sorted(Path(deps).glob("nflows-*.dist-info"))
        nflows_version = info[-1].name[len("nflows-"):-len(".dist-info")] if info else "unknown"
    report.update(targets=TARGETS, machine=machine,
                  nflows={"available": nflows_cls is not None, "note": nflows_note, "version": nflows_version},
                  run=run_record(asdict(cfg) | {"dtypes": list(dtypes)}, seed=0, device=cfg.device, timings=seconds))
    return report


# --- the README block ---------------------------------------------------------------------------

def _ms(t: dict) -> str:
    return f"{t['median_ms']:.2f} [{t['min_ms']:.2f}–{t['max_ms']:.2f}]"


def _x(r: dict | None) -> str:
    return "–" if r is None else f"{r['median']:.2f}x [{r['min']:.2f}–{r['max']:.2f}]"


CUDA_RESULTS = "bench_inn_cuda.json"


def render(results: Path) -> str:
    """Markdown for the README's ``bench`` block, from ``results/bench_inn.json``."""
    path = Path(results) / "bench_inn.json"
    if not path.is_file():
        return "No benchmark results yet: run `make bench` (writes results/bench_inn.json)."
    report = read_json(path, "make bench")
    if "run" not in report or "train_step" not in report:
        return "results/bench_inn.json comes from an older version of the bench: run `make bench`."
    return render_report(report)


def render_cuda(results: Path) -> str:
    """Markdown for the README's ``bench-cuda`` block, from ``results/bench_inn_cuda.json``
    (``scripts/gpu_bench.sh``), with the bfloat16 run summarised below the float32 tables."""
    path = Path(results) / CUDA_RESULTS
    if not path.is_file():
        return "Not measured: no GPU was lent yet (`scripts/gpu_bench.sh` writes results/bench_inn_cuda.json)."
    r = read_json(path, "scripts/gpu_bench.sh")
    lines = [render_report(r, source=f"results/{CUDA_RESULTS}")]
    for dtype, part in (r.get("by_dtype") or {}).items():
        t, skipped = part["layer"]["timings"], part["layer"].get("unsupported", {})
        ran = ", ".join(f"{name} {_ms(t[name])} ms" for name in ("plain_matmul", "forward", "nflows_forward") if name in t)
        lines += ["", f"**{dtype}** (the training step under autocast; parameters and losses stay float32): one layer, "
                  f"batch {r['run']['config']['batch']}: {ran}."]
        if skipped:
            kinds = sorted({v.split(":")[-1].strip() for v in skipped.values()})
            lines.append(f"Not run in {dtype} (no kernel in this torch): {', '.join(sorted(skipped))} ({'; '.join(kinds)}).")
        for row in part["train_step"]["rows"]:
            rt = row["timings"]
            if "shared_factors" in rt:
                lines.append(f"Training step depth {row['depth']}, {'forward + inverse' if row['inverse_loss'] else 'forward'}"
                             f" loss: {rt['shared_factors']['median_ms']:.1f} ms ({row['steps_per_s']['shared_factors']:.1f}/s).")
    return "\n".join(lines)


def render_report(r: dict, source: str = "results/bench_inn.json") -> str:
    """The Markdown of one bench report (what ``run`` returns)."""
    cfg, m, layer = r["run"]["config"], r["machine"], r["layer"]
    shares = [v for v in m.get("other_processes_cpu_share", {}).values() if v is not None]
    others = "an unknown share" if not shares else f"{100 * min(shares):.0f}–{100 * max(shares):.0f} %"
    t, ratios = layer["timings"], layer["ratios"]
    device = r["run"].get("device") or {}
    where = (f"on {device.get('name', 'a GPU')} (torch {r['run']['versions'].get('torch')}, {m['cores']} CPU cores beside it)"
             if device.get("type") == "cuda" else
             f"{m['torch_threads']} torch thread(s) on {m['cores']} cores ({m['cpu']}, {m['cpu_capability']}, "
             f"OMP_WAIT_POLICY={m['omp_wait_policy']})")
    lines = [f"`python -m invcap.bench --device {cfg.get('device', 'cpu')}` at commit `{r['run']['git_commit'][:10]}`"
             f"{' (dirty tree)' if r['run']['git_dirty'] else ''}, {r['run']['created_utc']}: n = {cfg['features']}, "
             f"{r['dtype']}, {where}. The machine is shared: other processes took {others} of its "
             f"CPU time during the parts of this run. Every time is the median of {cfg['repeats']} calls (a "
             f"training step: {cfg['net_repeats']}) with [min–max]; calls of one table are interleaved, and every ratio "
             f"is the median [min–max] of the ratios within one round. Source: `{source}`.", "",
             f"**One layer, batch {cfg['batch']}** (ms):", "", "| operation | ms | vs plain matmul |", "|---|---|---|"]
    names = [("plain_matmul", "plain `x @ W.T` (W precomputed)"), ("fused_linear", "`F.linear(x, W, b)`"),
             ("forward", "`LULinear` forward"), ("inverse", "`LULinear` inverse"),
             ("dense_solve", "dense `torch.linalg.solve(W, ·)`"),
             ("reference_forward", "before: forward (W = L U from two scatters per call)"),
             ("reference_inverse", "before: inverse (right-side solves)"),
             ("nflows_forward", "nflows `LULinear` forward"), ("nflows_inverse", "nflows `LULinear` inverse")]
    for key, label in names:
        if key in t:
            lines.append(f"| {label} | {_ms(t[key])} | {_x(_ratio(t, key, 'plain_matmul'))} |")
    met = r["targets_met"]
    lines += ["", "| target | ratio | goal | met |", "|---|---|---|---|"]
    labels = {"forward_vs_matmul": "forward / plain matmul", "inverse_vs_matmul": "inverse / plain matmul",
              "forward_vs_nflows": "forward / nflows forward", "inverse_vs_nflows": "inverse / nflows inverse"}
    for key, label in labels.items():
        verdict = "not measured" if met.get(key) is None else ("yes" if met[key] else "**no**")
        lines.append(f"| {label} | {_x(ratios.get(key))} | <= {r['targets'][key]} | {verdict} |")
    missed = [f"{labels[key]} by {100 * (ratios[key]['median'] / r['targets'][key] - 1):.0f} % "
              f"({ratios[key]['median']:.2f}x against {r['targets'][key]}x)" for key, ok in met.items() if ok is False]
    if missed:  # say by how much, not only "no"
        lines.append(f"\nMissed: {'; '.join(missed)}.")
    if not r["nflows"]["available"]:
        lines.append(f"\nnflows was not available: {r['nflows']['note']}.")
    else:
        lines.append(f"\nPeer: nflows {r['nflows']['version']} `LULinear` with the same W and bias "
                     f"(outputs agree to {layer['checks'].get('nflows_forward_vs_ours_relative_error', float('nan')):.1e} "
                     f"relative); our inverse is {_x(ratios.get('inverse_vs_dense_solve'))} a dense solve.")
    net = layer["network"]
    lines += ["", f"**InvertibleMLP, depth {net['depth']}, batch {cfg['batch']}** (ms):", "",
              "| direction | ours | before | nflows layers |", "|---|---|---|---|"]
    for d in ("forward", "inverse"):
        nt = net["timings"]
        peer = _ms(nt[f"nflows_mlp_{d}"]) if f"nflows_mlp_{d}" in nt else "–"
        lines.append(f"| {d} | {_ms(nt[f'mlp_{d}'])} | {_ms(nt[f'reference_mlp_{d}'])} | {peer} |")
    lines += ["", f"**Training step** (batch {cfg['train_batch']}, forward MSE [+ inverse MSE], backward, Adam; "
              f"ms per step, steps/s in brackets):", "",
              "| depth | loss | shared factors (the loop) | no sharing | before | nflows layers | speed-up vs before |",
              "|---|---|---|---|---|---|---|"]
    for row in r["train_step"]["rows"]:
        rt = row["timings"]
        cell = (lambda k: f"{rt[k]['median_ms']:.1f} ({row['steps_per_s'][k]:.1f}/s)" if k in rt else "–")
        speed = row["ratios"].get("shared_factors_vs_reference")
        speed = "–" if speed is None else f"{1 / speed['median']:.2f}x"
        lines.append(f"| {row['depth']} | {'forward + inverse' if row['inverse_loss'] else 'forward'} | "
                     f"{cell('shared_factors')} | {cell('unshared')} | {cell('reference')} | {cell('nflows')} | {speed} |")
    if "captioning_loop" in r:
        lines += ["", f"**`train_captioning` itself** (random data, batch {cfg['train_batch']}, "
                  f"{cfg['loop_steps']} timed steps x {cfg['loop_repeats']}):", "",
                  "| depth | inverse_weight | steps/s | ms/step [min–max] |", "|---|---|---|---|"]
        for row in r["captioning_loop"]["rows"]:
            lines.append(f"| {row['depth']} | {row['inverse_weight']:g} | {row['steps_per_s']:.1f} | "
                         f"{_ms(row['ms_per_step'])} |")
    return "\n".join(lines)


README_BLOCKS = {"bench": render, "bench-cuda": render_cuda}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32,bfloat16 (the first is the headline)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="batch of the layer table (default 4096)")
    parser.add_argument("--train-batch", type=int, default=None, help="batch of the training step and loop (default 256)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code path, measures nothing")
    parser.add_argument("--deps", type=Path, default=repo_root() / ".bench-deps", help="bench-only folder holding nflows")
    parser.add_argument("--out", type=Path, default=None, help="results file (default results/bench_inn.json)")
    parser.add_argument("--readme", type=Path, default=None, help="rewrite this README's bench block from --out")
    args = parser.parse_args(argv)
    dtypes = tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        raise ValueError(f"--dtypes takes names from {sorted(DTYPES)}, got {args.dtypes!r}")
    cfg = BenchConfig.quick(device=args.device, threads=args.threads) if args.quick else \
        BenchConfig(device=args.device, threads=args.threads)
    cfg = replace(cfg, **{k: v for k, v in (("batch", args.batch), ("train_batch", args.train_batch)) if v is not None})
    out = args.out or results_dir() / "bench_inn.json"
    report = run(cfg, args.deps, dtypes)
    write_json_atomic(out, report)
    print(("quick smoke run (tiny sizes, not a measurement)\n" if args.quick else "") + render_report(report))
    print(f"wrote {out}")
    if args.readme is not None:
        if out.name != "bench_inn.json":
            raise ValueError(f"--readme renders results/bench_inn.json; with --out {out} leave --readme out")
        update_readme(args.readme, out.parent)
        print(f"rewrote the bench block of {args.readme}")
    return 0


def update_readme(readme: Path, results: Path) -> None:
    """Rewrite the README's ``<!-- results:bench -->`` block from ``results/bench_inn.json``."""
    readme = Path(readme)
    write_text_atomic(readme, replace_marked_block(readme.read_text(), "bench", render(results)))


if __name__ == "__main__":
    raise SystemExit(main())

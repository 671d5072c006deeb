"""The paper's toy experiments (Table 1): learn an invertible scalar function with the invertible
network of ``invcap.inn``, then score the learned map, its inverse and the round trip.

The protocol (lifting by zero padding, stratified training points, fresh test points, the three
errors) is fixed here because the paper states none of it; ``PROTOCOL`` says it in words. Many
networks train at once: ``StackedInvertibleMLP`` (``invcap.toy_stack``) runs every function x seed
x variant of one dtype and schedule as one batched program, and the scores are computed on plain
``InvertibleMLP`` modules rebuilt from the trained parameters, so the table measures the library's
network. ``run_table`` caches what it trained under ``invcap.cache.cache_key``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from invcap.inn import InvertibleMLP
from invcap.optim import cosine_factor
from invcap.progress import progress
from invcap.toy_stack import StackedInvertibleMLP

__all__ = ["ToyFunction", "FUNCTIONS", "PROTOCOL", "Variant", "VARIANTS", "TABLE_VARIANTS", "OBJECTIVES",
           "TrainConfig", "lift", "sample_points", "squared_error", "evaluate", "error_amplification",
           "StackedInvertibleMLP", "ExperimentResult", "Job", "train_stack", "check_target", "run_experiment",
           "run_table", "table_cache_key", "table_cache_path", "TEST_STREAM"]

Target = Callable[[torch.Tensor], torch.Tensor]


# --- targets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToyFunction:
    """A target g, strictly monotone on ``domain`` so that g^-1 exists there."""

    name: str
    fn: Target
    domain: tuple[float, float]
    formula: str


def _polynomial(x: torch.Tensor) -> torch.Tensor:
    return x ** 3 + x  # derivative >= 1: strictly increasing everywhere


FUNCTIONS: dict[str, ToyFunction] = {
    "sine": ToyFunction("sine", torch.sin, (-math.pi / 2, math.pi / 2), "sin(x) on [-pi/2, pi/2]"),
    "polynomial": ToyFunction("polynomial", _polynomial, (-1.0, 1.0), "x^3 + x on [-1, 1]"),
    "exponential": ToyFunction("exponential", torch.exp, (-1.0, 1.0), "exp(x) on [-1, 1]"),
}

PROTOCOL = """\
protocol: a scalar x is lifted to the network's width n as (x, 0, ..., 0); the target g(x) the same way.
  training: n_train points, one uniform in each of n_train equal bins of the interval (stratified);
            full-batch Adam on them with a cosine learning-rate decay.
  testing: n_test fresh uniform points from an independent random stream (never the training points).
errors (per point the squared Euclidean distance over all n coordinates, averaged over test points):
  learning error   = mean ||f(x) - g(x)||^2
  inversion error  = mean ||f^-1(g(x)) - x||^2   (inverse applied to the TRUE targets)
  round-trip error = mean ||f^-1(f(x)) - x||^2   (numerical invertibility only)"""


# --- variants --------------------------------------------------------------------------------

OBJECTIVES = ("sum", "log")


@dataclass(frozen=True)
class Variant:
    """How one network is trained. Every variant runs through the same code.

    inverse_weight: weight w of the inverse-direction error mean ||f^-1(g(x)) - x||^2 next to the
        forward error mean ||f(x) - g(x)||^2 on the training points (0 = forward only, as the paper).
    objective: "sum": forward + w * inverse (plain MSE; with w = 0 the paper's loss);
        "log": log(forward) + w * log(inverse). Each direction gets attention relative to its own
        size, and the gradient does not shrink as the errors fall by decades. (At the start the
        inverse error is ~1e4, and a plain sum spends every step on it.)
    learn_diagonal: the U diagonals k_i are learned as exp(log_scale) instead of fixed at 1.
    dtype: "float32" or "float64" for parameters, data and arithmetic.
    steps_factor: train for steps_factor * TrainConfig.steps (a longer schedule).
    """

    name: str
    description: str
    inverse_weight: float = 0.0
    objective: str = "sum"
    learn_diagonal: bool = False
    dtype: str = "float32"
    steps_factor: int = 1

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not self.inverse_weight >= 0:
            raise ValueError(f"inverse_weight must be >= 0, got {self.inverse_weight!r}")
        if not isinstance(self.steps_factor, int) or self.steps_factor < 1:
            raise ValueError(f"steps_factor must be an int >= 1, got {self.steps_factor!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]


_BALANCED = dict(inverse_weight=0.3, objective="log")
VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("paper", "fixed diagonal k_i = 1, forward MSE only (the paper's training)"),
    Variant("paper_float64", "the paper's training in float64", dtype="float64"),
    Variant("plus_inverse", "fixed diagonal, forward MSE + inverse MSE (plain sum)", inverse_weight=1.0),
    Variant("balanced", "fixed diagonal, log forward MSE + 0.3 log inverse MSE", **_BALANCED),
    Variant("balanced_learn_diag", "learnable diagonal, log forward MSE + 0.3 log inverse MSE",
            learn_diagonal=True, **_BALANCED),
    Variant("balanced_learn_diag_float64", "balanced_learn_diag in float64", learn_diagonal=True,
            dtype="float64", **_BALANCED),
    Variant("balanced_learn_diag_4x", "balanced_learn_diag trained 4x as many steps", learn_diagonal=True,
            steps_factor=4, **_BALANCED),
]}
TABLE_VARIANTS = ["paper", "plus_inverse", "balanced", "balanced_learn_diag", "balanced_learn_diag_float64",
                  "balanced_learn_diag_4x"]


def _variant(variant: str | Variant) -> Variant:
    if isinstance(variant, Variant):
        return variant
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)} "
                         f"or pass an invcap.toy.Variant")
    return VARIANTS[variant]


@dataclass(frozen=True)
class TrainConfig:
    """Network and optimiser settings shared by every model of a table."""

    features: int = 16
    depth: int = 8
    negative_slope: float = 0.5
    steps: int = 5000
    lr: float = 1e-2
    final_lr_fraction: float = 1e-3  # cosine decay from lr to lr * this
    adam_beta2: float = 0.99  # shorter memory than 0.999: the step keeps up as the error falls by decades
    n_train: int = 128  # 256 gave the same table within the seed spread at 1.3x the cost; 64 did not
    n_test: int = 4096
    init_std: float = 0.5  # off-diagonal entries ~ N(0, init_std^2 / n)
    bias_std: float = 0.3  # biases ~ N(0, bias_std^2): spreads the LeakyReLU kinks over the interval

    def __post_init__(self) -> None:
        for name in ("features", "depth", "steps", "n_train", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not 0 < self.adam_beta2 < 1:
            raise ValueError(f"adam_beta2 must be in (0, 1), got {self.adam_beta2!r}")
        if not 0 < self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must be in (0, 1], got {self.final_lr_fraction!r}")
        for name in ("lr", "negative_slope"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("init_std", "bias_std"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


# --- protocol and error definitions ----------------------------------------------------------

TEST_STREAM = 1_000_003  # offset of the test-set generator seeds: never the training stream


def lift(values: torch.Tensor, features: int) -> torch.Tensor:
    """Scalars (...,) -> (..., features): the value in coordinate 0, zeros elsewhere."""
    if features < 1:
        raise ValueError(f"features must be >= 1, got {features}")
    out = values.new_zeros(*values.shape, features)
    out[..., 0] = values
    return out


def _check_domain(domain: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in domain)
    except (TypeError, ValueError):
        raise ValueError(f"domain must be a pair (lo, hi) of numbers, got {domain!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"domain must be finite, got {domain!r}")
    if lo >= hi:
        raise ValueError(f"domain must have lo < hi, got lo={lo}, hi={hi}")
    return lo, hi


def sample_points(target: Target, domain: Sequence[float], n: int, generator: torch.Generator,
                  dtype: torch.dtype = torch.float32, stratified: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """n points x ~ Uniform(domain) and their targets g(x), both shape (n,). ``stratified``: one
    uniform point in each of n equal bins (still uniform overall, but no gaps: used for training)."""
    lo, hi = _check_domain(domain)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if stratified:
        u = (torch.arange(n, dtype=torch.float64) + u) / n
    x = (lo + (hi - lo) * u).to(dtype)
    with torch.no_grad():
        y = target(x)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"target must map a 1-D tensor of shape {tuple(x.shape)} to a tensor of the "
                         f"same shape (elementwise), got {got}")
    y = y.to(dtype)
    bad = ~torch.isfinite(y)
    if bool(bad.any()):
        raise ValueError(f"target returned {int(bad.sum())} non-finite value(s) on the domain "
                         f"[{lo}, {hi}] (for example at x = {float(x[bad][0]):.6g}); choose a domain "
                         f"where the function is finite")
    return x, y


def squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per point the squared Euclidean distance over the last (feature) dimension, averaged over
    points: (..., points, n) -> (...)."""
    return ((pred - target) ** 2).sum(-1).mean(-1)


@torch.no_grad()
def evaluate(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Learning, inversion and round-trip errors of ``net`` (with ``forward`` and ``inverse``) on
    scalar test points x and their true targets y = g(x), both shape (points,)."""
    x_lifted, y_lifted = lift(x, net.features), lift(y, net.features)
    pred = net(x_lifted)
    return {
        "learning_error": float(squared_error(pred, y_lifted)),
        "inversion_error": float(squared_error(net.inverse(y_lifted), x_lifted)),
        "roundtrip_error": float(squared_error(net.inverse(pred), x_lifted)),
    }


@torch.no_grad()
def error_amplification(model: InvertibleMLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per point ||f^-1(g(x)) - x|| / ||g(x) - f(x)||: how much the inverse magnifies the forward
    residual there. ``model.conditioning().inverse_lipschitz_bound`` bounds it above."""
    x_lifted, y_lifted = lift(x, model.features), lift(y, model.features)
    residual = (y_lifted - model(x_lifted)).norm(dim=-1)
    return (model.inverse(y_lifted) - x_lifted).norm(dim=-1) / residual.clamp_min(torch.finfo(x.dtype).tiny)


# --- training --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One network to train: target g on ``domain``, trained as ``variant`` from ``seed``."""

    function: str
    target: Target
    domain: tuple[float, float]
    variant: Variant
    seed: int


@dataclass
class ExperimentResult:
    """One trained network (an ``InvertibleMLP``) and its test errors (see the module docstring)."""

    function: str
    variant: str
    dtype: str
    seed: int
    learning_error: float
    inversion_error: float
    roundtrip_error: float
    final_train_error: float
    model: InvertibleMLP = field(repr=False)

    def scores(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "model"}


def _objective(forward: torch.Tensor, inverse: torch.Tensor, weights: torch.Tensor,
               objective: torch.Tensor) -> torch.Tensor:
    """Per-model objective from per-model forward and inverse errors, inverse weights and the
    index of each model's objective in ``OBJECTIVES``."""
    plain = forward + weights * inverse
    logs = torch.log(forward) + weights * torch.log(inverse)
    return torch.where(objective == OBJECTIVES.index("log"), logs, plain)


def _objective_for(jobs: Sequence[Job], dtype: torch.dtype) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(forward, inverse) -> the summed objective of every model. When all jobs share one objective
    only that one is computed (a third of the ops: the step is bound by their number)."""
    weights = torch.tensor([job.variant.inverse_weight for job in jobs], dtype=dtype)
    kinds = {job.variant.objective for job in jobs}
    if kinds == {"log"}:
        return lambda forward, inverse: (torch.log(forward) + weights * torch.log(inverse)).sum()
    if kinds == {"sum"}:
        return lambda forward, inverse: (forward + weights * inverse).sum()
    objective = torch.tensor([OBJECTIVES.index(job.variant.objective) for job in jobs])
    return lambda forward, inverse: _objective(forward, inverse, weights, objective).sum()


def _check_stack(jobs: Sequence[Job]) -> None:
    if not jobs:
        raise ValueError("train_stack needs at least one job")
    groups = sorted({(job.variant.dtype, job.variant.steps_factor) for job in jobs})
    if len(groups) != 1:
        raise ValueError(f"one stack holds one (dtype, steps_factor), got {groups}; group the jobs")


def train_stack(jobs: Sequence[Job], config: TrainConfig = TrainConfig(), show_progress: bool = False,
                description: str = "training") -> list[ExperimentResult]:
    """Train one network per job, all at once, and score each on fresh test points. All jobs must
    share a dtype and a steps_factor. A job's start, training and test points depend only on its
    own seed (and its target); the stack only batches the arithmetic."""
    _check_stack(jobs)
    n_steps = config.steps * jobs[0].variant.steps_factor
    dtype = jobs[0].variant.torch_dtype
    net = StackedInvertibleMLP(len(jobs), config.features, config.depth, config.negative_slope,
                               [job.variant.learn_diagonal for job in jobs], dtype)
    # Per model: one stream for the start and the training set, an independent one for the test set.
    train_gens = [torch.Generator().manual_seed(job.seed) for job in jobs]
    net.reset_parameters_(train_gens, config.init_std, config.bias_std)
    train = [sample_points(j.target, j.domain, config.n_train, g, dtype, stratified=True)
             for j, g in zip(jobs, train_gens)]
    x_train, y_train = torch.stack([x for x, _ in train]), torch.stack([y for _, y in train])
    objective = _objective_for(jobs, dtype)
    # Only the models that use it run the inverse: a forward-only model's inverse can be huge, and
    # 0 * inf would poison its gradients. The others get 1 (weight 0, and log 1 = 0).
    with_inverse = [m for m, job in enumerate(jobs) if job.variant.inverse_weight > 0]
    loss = net.training_loss(x_train, y_train, torch.tensor(with_inverse, dtype=torch.long))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, config.adam_beta2), fused=True)
    for step in progress(range(n_steps), desc=description, unit="step", disable=not show_progress):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * cosine_factor(step, n_steps, config.final_lr_fraction)
        optimizer.zero_grad(set_to_none=True)
        forward, inverse = loss()
        # Adam scales each parameter separately and the models share none: summing the per-model
        # objectives trains every model exactly as if it were alone.
        objective(forward, inverse).backward()
        optimizer.step()
    _check_finite(net, forward.detach(), jobs, config)
    return _score(net, jobs, config, forward.detach())


def _check_finite(net: StackedInvertibleMLP, forward: torch.Tensor, jobs: Sequence[Job], config: TrainConfig) -> None:
    finite = torch.stack([torch.isfinite(p.detach()).flatten(1).all(1) for p in net.parameters()]).all(0)
    finite &= torch.isfinite(forward)
    if not bool(finite.all()):
        bad = [f"{jobs[m].function}/{jobs[m].variant.name}/seed {jobs[m].seed}"
               for m in torch.nonzero(~finite).flatten().tolist()]
        raise ValueError(f"training diverged (non-finite parameters or error) for {bad}; lower lr "
                         f"(now {config.lr}) or the inverse_weight")


def _score(net: StackedInvertibleMLP, jobs: Sequence[Job], config: TrainConfig,
           final_train: torch.Tensor) -> list[ExperimentResult]:
    dtype = net.lower_entries.dtype
    results = []
    for m, job in enumerate(jobs):
        x_test, y_test = sample_points(job.target, job.domain, config.n_test,
                                       torch.Generator().manual_seed(TEST_STREAM + job.seed), dtype)
        module = net.to_module(m)
        results.append(ExperimentResult(job.function, job.variant.name, job.variant.dtype, job.seed,
                                        final_train_error=float(final_train[m]), model=module,
                                        **evaluate(module, x_test, y_test)))
    return results


def check_target(target: Target, domain: Sequence[float], points: int = 10_001) -> tuple[float, float]:
    """Check that ``target`` maps tensors elementwise to finite values and is strictly monotone on
    ``domain`` (else no inverse exists and the inversion error means nothing). Returns the domain."""
    lo, hi = _check_domain(domain)
    if not callable(target):
        raise ValueError(f"target must be a callable tensor -> tensor, got {type(target).__name__}")
    x = torch.linspace(lo, hi, points, dtype=torch.float64)
    try:
        y = target(x)
    except Exception as error:  # noqa: BLE001 - any failure here is a bad target, say so clearly
        raise ValueError(f"target failed on a float64 tensor of {points} points in [{lo}, {hi}]: "
                         f"{type(error).__name__}: {error}. It must accept a torch.Tensor (use torch.sin, "
                         f"not math.sin)") from error
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"target must return a tensor of the input's shape {tuple(x.shape)}, got {got}")
    bad = ~torch.isfinite(y)
    if bool(bad.any()):
        raise ValueError(f"target returned {int(bad.sum())} non-finite value(s) on [{lo}, {hi}] (first at "
                         f"x = {float(x[bad][0]):.6g}); choose a domain where it is finite")
    steps = torch.diff(y)
    if not (bool((steps > 0).all()) or bool((steps < 0).all())):
        raise ValueError(f"target is not strictly monotone on [{lo}, {hi}], so it has no inverse there; "
                         f"choose a domain on which it is strictly increasing or decreasing")
    return lo, hi


def run_experiment(target: Target, domain: Sequence[float], variant: str | Variant = "paper",
                   seed: int = 0, config: TrainConfig | None = None, name: str = "custom",
                   show_progress: bool = False, **overrides: Any) -> ExperimentResult:
    """Train one network on a scalar function and score it.

    ``target`` maps a tensor elementwise and is strictly monotone on ``domain`` = (lo, hi);
    ``variant`` is a name in ``VARIANTS`` (or a ``Variant``); ``overrides`` replace fields of
    ``config`` (default ``TrainConfig()``), e.g. ``steps=2000, features=8``. Returns an
    ``ExperimentResult`` with ``learning_error``, ``inversion_error``, ``roundtrip_error`` and
    the trained ``model`` (an ``invcap.inn.InvertibleMLP``)."""
    variant = _variant(variant)
    domain = check_target(target, domain)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    unknown = sorted(set(overrides) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; TrainConfig has {sorted(TrainConfig.__dataclass_fields__)}")
    config = replace(config or TrainConfig(), **overrides)
    return train_stack([Job(name, target, domain, variant, seed)], config, show_progress, name)[0]


# --- the table, several stacks, cached ----------------------------------------------------------

def _train_stack_in_worker(jobs: Sequence[Job], config: TrainConfig, description: str) -> list[ExperimentResult]:
    torch.set_num_threads(1)  # the ops are tiny: one thread per process is the fastest, and reproducible
    return train_stack(jobs, config, description=description)


def _stacks(jobs: Sequence[Job], config: TrainConfig) -> list[list[int]]:
    """Job indices per (dtype, steps_factor), the most expensive stack first so that with several
    workers the longest one starts at once (float64 costs about twice float32)."""
    keys = sorted({(j.variant.dtype, j.variant.steps_factor) for j in jobs})
    groups = [[i for i, j in enumerate(jobs) if (j.variant.dtype, j.variant.steps_factor) == key] for key in keys]

    def cost(index: list[int]) -> float:
        variant = jobs[index[0]].variant
        rows = sum(1 + (jobs[i].variant.inverse_weight > 0) for i in index)
        return variant.steps_factor * config.steps * (rows + 8) * (2 if variant.dtype == "float64" else 1)
    return sorted(groups, key=cost, reverse=True)


def _describe(jobs: Sequence[Job], index: list[int], config: TrainConfig) -> str:
    variant = jobs[index[0]].variant
    return f"{len(index)} networks, {variant.dtype}, {variant.steps_factor * config.steps} steps"


def _train_all(jobs: list[Job], config: TrainConfig, workers: int, show_progress: bool) -> list[ExperimentResult]:
    stacks = _stacks(jobs, config)
    results: dict[int, ExperimentResult] = {}
    if workers == 1 or len(stacks) == 1:
        for index in stacks:
            trained = train_stack([jobs[i] for i in index], config, show_progress, _describe(jobs, index, config))
            results.update(zip(index, trained))
        return [results[i] for i in range(len(jobs))]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child can inherit a held OpenMP lock from the parent.
    context = multiprocessing.get_context("spawn")
    bar = progress(total=len(jobs), desc=f"training {len(jobs)} networks in {min(workers, len(stacks))} processes",
                   unit="networks", disable=not show_progress)
    with bar, ProcessPoolExecutor(min(workers, len(stacks)), mp_context=context) as pool:
        futures = [pool.submit(_train_stack_in_worker, [jobs[i] for i in index], config,
                               _describe(jobs, index, config)) for index in stacks]
        for index, future in zip(stacks, futures):
            results.update(zip(index, future.result()))
            bar.update(len(index))
    return [results[i] for i in range(len(jobs))]


def table_cache_key(functions: Sequence[str], variants: Sequence[Variant], seeds: Sequence[int],
                    config: TrainConfig) -> str:
    """Everything that decides the trained networks: the settings, the targets, the torch version,
    the CPU code path (training amplifies the float differences between kernels) and the source of
    this trainer, the stacked network and ``invcap.inn``."""
    import os
    import sys

    from invcap import cache, inn, optim, toy_stack

    targets = [(f, FUNCTIONS[f].formula, FUNCTIONS[f].domain) for f in functions]
    numeric_path = {"torch": torch.__version__, "threads_per_stack": 1,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "mkl_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS", "")}
    settings = {"functions": targets, "variants": list(variants), "seeds": list(seeds), "config": config,
                "numeric_path": numeric_path}
    return cache.cache_key(settings, data=None, code=[sys.modules[__name__], toy_stack, inn, optim])


def table_cache_path(functions: Sequence[str], variants: Sequence[str | Variant], seeds: Sequence[int],
                     config: TrainConfig) -> Path:
    """Where ``run_table(..., cache=True)`` keeps these networks: ``cache_dir()/toy/table1-<key>.pt``."""
    from invcap.cache import cached_path

    return cached_path("toy", "table1", table_cache_key(functions, [_variant(v) for v in variants], seeds, config))


def run_table(functions: Sequence[str] = tuple(FUNCTIONS), variants: Sequence[str] = tuple(TABLE_VARIANTS),
              seeds: Sequence[int] = (0, 1, 2), config: TrainConfig = TrainConfig(),
              cache: bool = False, workers: int = 1, show_progress: bool = False) -> list[ExperimentResult]:
    """Every function x variant x seed, trained as one stack per (dtype, steps). Returns one result per
    network, ordered by variant, function, seed.

    ``cache``: keep the trained networks and scores under ``cache_dir()/toy`` (``table_cache_key``)
    and reuse them. ``workers`` > 1 trains the stacks in that many processes of one thread each,
    which gives the same numbers as one process; from a script, call it under
    ``if __name__ == "__main__":`` (the processes are spawned)."""
    for name in functions:
        if name not in FUNCTIONS:
            raise ValueError(f"unknown function {name!r}; choose from {sorted(FUNCTIONS)}")
    chosen = [_variant(v) for v in variants]
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of non-negative ints, got {seeds!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    path = None
    if cache:
        path = table_cache_path(functions, chosen, seeds, config)
        if path.is_file():
            return _load_results(path, config)
    jobs = [Job(f, FUNCTIONS[f].fn, FUNCTIONS[f].domain, v, s) for v in chosen for f in functions for s in seeds]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same numbers in one process as in the workers
    try:
        ordered = _train_all(jobs, config, workers, show_progress)
    finally:
        torch.set_num_threads(threads)
    if path is not None:
        _save_results(path, ordered)
    return ordered


def _save_results(path, results: Sequence[ExperimentResult]) -> None:
    from invcap.io import save_torch_atomic

    save_torch_atomic([{"scores": r.scores(), "learn_diagonal": r.model.linears[0].learn_diagonal,
                        "state": r.model.state_dict()} for r in results], path)


def _load_results(path, config: TrainConfig) -> list[ExperimentResult]:
    results = []
    for item in torch.load(path, weights_only=True):
        scores = item["scores"]
        dtype = {"float32": torch.float32, "float64": torch.float64}[scores["dtype"]]
        model = InvertibleMLP(config.features, config.depth, negative_slope=config.negative_slope,
                              learn_diagonal=item["learn_diagonal"]).to(dtype)
        model.load_state_dict(item["state"])
        results.append(ExperimentResult(**scores, model=model))
    return results

"""Notebook 01 (``notebooks/01_toy_invertibility.ipynb``): the paper's Table 1, reproduced,
explained and beaten, with the trainer of ``invcap.toy``.

Steps the notebook calls, in order: ``setup`` -> ``describe`` -> ``train`` (every function x
variant x seed; a ``ToyRun``) -> ``summarise`` -> ``verdicts`` -> figures -> ``analyse_conditioning``
-> ``conclusions`` -> ``run_demo`` -> ``write_results``. The results files are
``results/table1.csv`` (``TABLE_COLUMNS``) and ``results/table1.json`` (``RESULTS_KEYS``: the run
record with its timings, the table, every network's scores, the conditioning rows, the demo). The
narrative (``conclusions``), the checked verdicts and the README blocks are all computed from
those numbers; the figures are in ``invcap.studies.nb01_toy_figures``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from invcap import toy
from invcap.cache import cache_key
from invcap.io import results_dir, write_csv_atomic, write_json_atomic
from invcap.repro import DEFAULT_THREADS, Stopwatch, run_record, seed_everything
from invcap.studies.common import NotebookParams
from invcap.studies.nb01_toy_figures import plot_errors, plot_fits, plot_toy_conditioning
from invcap.studies.nb01_toy_report import (KEY_NUMBERS, PAPER_TABLE1, README_BLOCKS, RESULTS, RESULTS_KEYS,
                                            TABLE_COLUMNS, Verdict, best_variant, conclusions, glance_row, headline,
                                            load_results, markdown_table, summarise, verdict_checks, verdicts,
                                            verdicts_with_margins, worst_ratio_to_paper)

__all__ = ["Params", "ToyRun", "PAPER_TABLE1", "TABLE_COLUMNS", "RESULTS_KEYS", "setup", "describe", "train", "training_summary", "narrative", "headline",
           "summarise", "worst_ratio_to_paper", "best_variant", "markdown_table", "table_frame",
           "toy_conditioning_rows", "analyse_conditioning", "conditioning_frame", "run_demo", "demo_text",
           "write_results", "save", "load_results", "verdicts", "verdicts_with_margins", "verdict_checks", "Verdict",
           "conclusions", "plot_fits", "plot_errors", "plot_toy_conditioning", "glance_row", "README_BLOCKS",
           "KEY_NUMBERS"]



@dataclass(frozen=True)
class Params(NotebookParams):
    """The notebook's parameters cell (field ``steps`` is the notebook's ``STEPS``)."""

    seed: int = 0              # first seed; the table uses seed, seed + 1, ..., seed + n_seeds - 1
    n_seeds: int = 3
    functions: tuple[str, ...] = ("sine", "polynomial", "exponential")
    variants: tuple[str, ...] = tuple(toy.TABLE_VARIANTS)
    features: int = 16         # network width n: a scalar is zero-padded to n coordinates
    depth: int = 8             # LU layers
    steps: int = 5000          # full-batch Adam steps; "_4x" variants train 4x as long
    lr: float = 1e-2
    n_train: int = 128         # training points per network (one uniform point in each of n_train bins)
    n_test: int = 4096         # fresh test points per network (independent stream)
    use_cache: bool = True     # reuse trained networks from .cache/toy when nothing changed
    workers: int = 0           # processes training the stacks side by side (same numbers as 1); 0: INVCAP_THREADS
    demo_variant: str = "balanced_learn_diag"  # run_experiment on a user function ...
    demo_steps: int = 1000                     # ... for this many steps

    def __post_init__(self) -> None:
        for name in ("functions", "variants"):  # the notebook writes lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.n_seeds, int) or self.n_seeds < 1:
            raise ValueError(f"N_SEEDS must be an int >= 1, got {self.n_seeds!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"WORKERS must be an int >= 0 (0: one per thread of INVCAP_THREADS), got {self.workers!r}")
        if "paper" not in self.variants:
            raise ValueError(f"VARIANTS must include 'paper' (the table compares every variant with it), "
                             f"got {list(self.variants)}")
        self.config()  # validates the training settings now, with TrainConfig's messages

    @property
    def n_workers(self) -> int:
        """``workers``, or with 0 the thread allowance ``INVCAP_THREADS`` (default 2): under
        ``/work/bin/heavy`` or ``make test`` (one thread) the stacks train one after another."""
        if self.workers:
            return self.workers
        return max(1, int(os.environ.get("INVCAP_THREADS", DEFAULT_THREADS)))

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.n_seeds))

    def config(self) -> toy.TrainConfig:
        return toy.TrainConfig(features=self.features, depth=self.depth, steps=self.steps, lr=self.lr,
                               n_train=self.n_train, n_test=self.n_test)


@dataclass
class ToyRun:
    """What one run of the notebook computed, step by step."""

    params: Params
    results: list[toy.ExperimentResult]
    rows: list[dict[str, Any]]
    best: str
    from_cache: bool
    watch: Stopwatch = field(default_factory=Stopwatch)
    conditioning: list[dict[str, Any]] = field(default_factory=list)
    demo: toy.ExperimentResult | None = None
    started: float = field(default_factory=time.perf_counter)


# --- steps ---------------------------------------------------------------------------------

def setup(params: Params) -> None:
    """Seed everything; one thread (the ops are tiny, and a second thread only adds waiting)."""
    seed_everything(params.seed, threads=1)


def describe(params: Params) -> str:
    """The protocol, the targets, the variants and the training settings, as text."""
    lines = [toy.PROTOCOL, "", "targets:"]
    lines += [f"  {name:12s} {toy.FUNCTIONS[name].formula}" for name in params.functions]
    lines += ["", "variants:"]
    lines += [f"  {name:28s} {toy.VARIANTS[name].dtype:8s} {toy.VARIANTS[name].description}" for name in params.variants]
    return "\n".join(lines + ["", str(params.config()), f"seeds: {params.seeds}"])


def train(params: Params) -> ToyRun:
    """Train (or load from the cache) every function x variant x seed and summarise the table."""
    start = time.perf_counter()
    config = params.config()
    from_cache = params.use_cache and toy.table_cache_path(params.functions, params.variants, params.seeds,
                                                           config).is_file()
    watch = Stopwatch()
    with watch("train"):
        results = toy.run_table(params.functions, params.variants, params.seeds, config, cache=params.use_cache,
                                workers=params.n_workers, show_progress=True)
    rows = summarise(results)
    return ToyRun(params, results, rows, best_variant(rows), from_cache, watch, started=start)


def table_frame(rows: Sequence[dict[str, Any]]):
    """The table as a pandas DataFrame (for display)."""
    import pandas as pd

    return pd.DataFrame(rows)[TABLE_COLUMNS]


def training_summary(run: ToyRun) -> str:
    how = "loaded from the cache" if run.from_cache else f"trained in {run.params.n_workers} worker process(es)"
    return f"{len(run.results)} networks, {how}, in {run.watch.seconds['train']:.0f} s; best variant: {run.best}"


# --- conditioning: why forward-only training does not invert ----------------------------------

def toy_conditioning_rows(result: toy.ExperimentResult, n_points: int = 4096, ends: float = 0.1) -> dict[str, Any]:
    """``model.conditioning()`` of one trained toy network in a row, with what it is compared to,
    measured on fresh points of the result's own target (one of ``toy.FUNCTIONS``): the median
    error amplification and the share of the learning and inversion errors that comes from the
    outer ``ends`` of the interval (both ends together)."""
    function, model = toy.FUNCTIONS[result.function], result.model
    dtype = next(model.parameters()).dtype
    x, y = toy.sample_points(function.fn, function.domain, n_points,
                             torch.Generator().manual_seed(toy.TEST_STREAM + 7 + result.seed), dtype)
    cond = model.conditioning()
    n, slope = model.features, model.activation.negative_slope
    with torch.no_grad():
        learning = ((model(toy.lift(x, n)) - toy.lift(y, n)) ** 2).sum(-1)
        inversion = ((model.inverse(toy.lift(y, n)) - toy.lift(x, n)) ** 2).sum(-1)
    lo, hi = function.domain
    near = (x < lo + ends / 2 * (hi - lo)) | (x > hi - ends / 2 * (hi - lo))
    return {
        "function": result.function, "variant": result.variant, "seed": result.seed,
        "max_condition_number": cond.max_condition_number,
        "min_sigma_min": min(layer.sigma_min for layer in cond.layers),
        "max_sigma_max": max(layer.sigma_max for layer in cond.layers),
        "inverse_lipschitz_bound": cond.inverse_lipschitz_bound,
        "sum_log_abs_det": sum(layer.log_abs_det for layer in cond.layers),  # log|det| of all W_i
        # the most the LeakyReLUs can lower log|det J_f| (every unit below zero)
        "activation_log_det_drop": model.n_activations * n * -math.log(min(slope, 1.0)),
        "median_amplification": float(toy.error_amplification(model, x, y).median()),
        "ends": ends,
        "learning_share_near_ends": float(learning[near].sum() / learning.sum()),
        "inversion_share_near_ends": float(inversion[near].sum() / inversion.sum()),
        "layers": cond.as_rows(),
    }


def pick(results: Sequence[toy.ExperimentResult], function: str, variant: str, seed: int) -> toy.ExperimentResult:
    for r in results:
        if (r.function, r.variant, r.seed) == (function, variant, seed):
            return r
    raise ValueError(f"no result for function={function!r}, variant={variant!r}, seed={seed}")


def analyse_conditioning(run: ToyRun) -> list[dict[str, Any]]:
    """Conditioning rows of the first seed's networks, the paper's recipe against the best variant."""
    variants = list(dict.fromkeys(["paper", run.best]))
    with run.watch("conditioning"):
        run.conditioning = [toy_conditioning_rows(pick(run.results, f, v, run.params.seed))
                            for f in run.params.functions for v in variants]
    return run.conditioning


def narrative(run: ToyRun) -> str:
    """The headline and the conclusions of this run, as Markdown."""
    return headline(run.rows) + "\n\n" + conclusions(run.rows, run.conditioning)


def conditioning_frame(rows: Sequence[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame([{k: v for k, v in row.items() if k != "layers"} for row in rows])


# --- your own function ---------------------------------------------------------------------------

DEMO_TARGET = "tanh"
DEMO_DOMAIN = (-2.0, 2.0)


def run_demo(run: ToyRun) -> toy.ExperimentResult:
    """``toy.run_experiment`` on tanh over [-2, 2]: the call a user makes for their own function."""
    params = run.params
    with run.watch("demo"):
        run.demo = toy.run_experiment(target=torch.tanh, domain=DEMO_DOMAIN, variant=params.demo_variant,
                                      seed=params.seed, config=params.config(), steps=params.demo_steps)
    return run.demo


def demo_text(demo: dict[str, Any] | toy.ExperimentResult, params: Params | None = None) -> str:
    d = demo if isinstance(demo, dict) else {**demo.scores(), "steps": params.demo_steps}
    return (f"{DEMO_TARGET} on [{DEMO_DOMAIN[0]:g}, {DEMO_DOMAIN[1]:g}], variant {d['variant']}, {d['steps']} steps: "
            f"learning {d['learning_error']:.1e}, inversion {d['inversion_error']:.1e}, "
            f"round trip {d['roundtrip_error']:.1e}")


# --- results files ---------------------------------------------------------------------------------

def write_results(run: ToyRun, folder: Path | None = None) -> list[Path]:
    """``results/table1.csv`` and ``results/table1.json`` (strict JSON, run record with timings)."""
    folder = folder or results_dir()
    params = run.params
    timings = dict(run.watch.seconds)
    timings["notebook_until_results"] = time.perf_counter() - run.started
    config = {**params.as_dict(), **vars(params.config()), "seeds": params.seeds,
              "steps_4x": 4 * params.steps, "workers_used": params.n_workers}
    data = cache_key({f: (toy.FUNCTIONS[f].formula, toy.FUNCTIONS[f].domain) for f in params.functions})
    demo = None
    if run.demo is not None:
        demo = {**run.demo.scores(), "target": DEMO_TARGET, "domain": list(DEMO_DOMAIN), "steps": params.demo_steps}
    record = {"run": run_record(config, params.seed, "cpu", data=data, timings=timings),
              "protocol": toy.PROTOCOL, "targets": {f: toy.FUNCTIONS[f].formula for f in params.functions}, "table": run.rows, "runs": [r.scores() for r in run.results],
              "conditioning": run.conditioning, "best_variant": run.best, "demo": demo, "from_cache": run.from_cache}
    paths = [write_csv_atomic(folder / RESULTS[0], run.rows, TABLE_COLUMNS),
             write_json_atomic(folder / RESULTS[1], record)]
    return paths


def save(run: ToyRun) -> str:
    """``write_results`` into ``results_dir()``, and a line saying what was written (no machine path)."""
    paths = write_results(run)
    return f"wrote {', '.join(p.name for p in paths)} to the results folder"



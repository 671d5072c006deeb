"""Benchmarks behind ``make bench``: ``python -m invcap.bench`` writes ``results/bench_inn.json``.

The invertible layers against what they replace: one ``LULinear`` forward against a plain
``x @ W.T`` with W precomputed (and against the fused ``F.linear(x, W, b)``), its inverse against ``torch.linalg.solve`` with the dense W, and
the whole ``InvertibleMLP`` (n=384, batch 4096, depth 8, float32, 2 threads).
Targets: a layer's forward within 1.3x of the plain matmul, its inverse within 2.5x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from invcap.inn import InvertibleMLP, LULinear
from invcap.io import results_dir, write_json_atomic
from invcap.repro import run_record, seed_everything


def time_call(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median and spread of wall-clock seconds over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def bench_inn(features: int = 384, batch: int = 4096, depth: int = 8, threads: int = 2,
              repeats: int = 20) -> dict:
    seed_everything(0, threads=threads)
    layer = LULinear(features, init_std=0.3)
    net = InvertibleMLP(features, depth, init_std=0.3)
    x = torch.randn(batch, features)
    with torch.no_grad():
        W = layer.weight.clone()
        bias = layer.bias.clone()
        y = layer(x)
        y_net = net(x)
        timings = {
            "plain_matmul": time_call(lambda: x @ W.T, repeats),
            # the fused matmul + bias: the fairest baseline, since LULinear adds a bias too
            "fused_linear": time_call(lambda: torch.nn.functional.linear(x, W, bias), repeats),
            "lulinear_forward": time_call(lambda: layer(x), repeats),
            "lulinear_inverse": time_call(lambda: layer.inverse(y), repeats),
            "dense_solve": time_call(lambda: torch.linalg.solve(W, (y - bias).T).T, repeats),
            "mlp_forward": time_call(lambda: net(x), repeats),
            "mlp_inverse": time_call(lambda: net.inverse(y_net), repeats),
        }
    plain = timings["plain_matmul"]["median_s"]
    fused = timings["fused_linear"]["median_s"]
    ratios = {
        "lulinear_forward_vs_fused_linear": timings["lulinear_forward"]["median_s"] / fused,
        "lulinear_forward_vs_matmul": timings["lulinear_forward"]["median_s"] / plain,
        "lulinear_inverse_vs_matmul": timings["lulinear_inverse"]["median_s"] / plain,
        "lulinear_inverse_vs_dense_solve": timings["lulinear_inverse"]["median_s"] / timings["dense_solve"]["median_s"],
        "mlp_forward_vs_depth_matmuls": timings["mlp_forward"]["median_s"] / (depth * plain),
        "mlp_inverse_vs_depth_matmuls": timings["mlp_inverse"]["median_s"] / (depth * plain),
    }
    targets = {"lulinear_forward_vs_matmul": 1.3, "lulinear_inverse_vs_matmul": 2.5}
    config = {"features": features, "batch": batch, "depth": depth, "dtype": "float32", "threads": threads}
    return {"benchmark": "inn", **run_record(config, seed=0), "timings": timings, "ratios": ratios,
            "targets": targets, "targets_met": {k: ratios[k] <= v for k, v in targets.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    report = bench_inn(threads=args.threads, repeats=args.repeats)
    path = write_json_atomic(results_dir() / "bench_inn.json", report)
    print(f"n={report['config']['features']} batch={report['config']['batch']} depth={report['config']['depth']} "
          f"float32 threads={report['config']['threads']}")
    for name, t in report["timings"].items():
        print(f"  {name:18s} {1e3 * t['median_s']:8.2f} ms (median of {t['repeats']})")
    for name, r in report["ratios"].items():
        target = report["targets"].get(name)
        mark = "" if target is None else f"  (target <= {target}: {'met' if r <= target else 'MISSED'})"
        print(f"  {name:34s} {r:5.2f}x{mark}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

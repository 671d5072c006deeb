"""Reproducibility: one call seeds every generator and fixes the thread count, and one
function describes the run (config, seed, versions, device, git commit) for results files.

Same seed, same threads, same machine kind -> same numbers. Across thread counts, CPU vs GPU
or torch releases, results can differ in the last bits (pytorch#88718), which is why the
notebooks print rounded metrics.
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import time
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np
import torch

DEFAULT_THREADS = 2


def seed_everything(seed: int = 0, threads: int | None = None, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA), fix torch's CPU thread count and ask for
    deterministic algorithms. Returns a ``torch.Generator`` seeded the same way, for code that
    prefers an explicit generator.

    ``threads`` defaults to ``INVCAP_THREADS`` or 2 (the CI machine's cores).
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if threads is None:
        threads = int(os.environ.get("INVCAP_THREADS", DEFAULT_THREADS))
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.set_num_threads(threads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed for deterministic cuBLAS
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> CUDA when available, else CPU. A request for CUDA on a machine
    without it is a clear error, not a silent fallback."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA device; "
                         "use device='cpu' or 'auto'")
    return device


# What `make paper` itself rewrites while it runs: a change there does not make the code differ from
# the commit (otherwise every results file after the first notebook's would be marked dirty).
ARTIFACT_PATHS = ("figures", "results", "notebooks/*.ipynb", "README.md")


def git_state() -> dict[str, Any]:
    """``{"commit": hash or "unknown", "dirty": whether tracked files other than the artifacts that
    ``make paper`` writes (``ARTIFACT_PATHS``) differ from it}``."""
    from invcap.io import repo_root

    try:
        root = repo_root()
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        excluded = [f":(exclude){path}" for path in ARTIFACT_PATHS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def git_commit() -> str:
    """The checkout's commit (with ``-dirty`` when it has uncommitted changes), or 'unknown'."""
    state = git_state()
    return state["commit"] + ("-dirty" if state["dirty"] else "")


def device_record(device: str | torch.device | None = None) -> dict[str, Any]:
    """The device a run used: type, name and CPU threads (and the CPU capability torch dispatches to)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    record = {"type": dev.type, "name": name, "threads": torch.get_num_threads()}
    try:
        record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - older torch
        pass
    return record


def run_record(config: Mapping[str, Any] | None = None, seed: int | None = None,
               device: str | torch.device | None = None, data: str | None = None,
               timings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """What every results file carries beside its numbers: config, seed, versions, device, the
    data key, timings (seconds per stage) and the git commit with whether the tree was dirty."""
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__}
    try:
        import invcap

        versions["invcap"] = invcap.__version__
    except ImportError:  # pragma: no cover
        pass
    state = git_state()
    return {
        "config": dict(config or {}),
        "seed": seed,
        "versions": versions,
        "device": device_record(device),
        "data": data,
        "timings": dict(timings or {}),
        "git_commit": state["commit"],
        "git_dirty": state["dirty"],
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class Stopwatch:
    """Wall-clock seconds per named stage: ``with watch("train"): ...``; ``watch.seconds``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str) -> "_Stage":
        return _Stage(self, stage)


class _Stage:
    def __init__(self, watch: Stopwatch, stage: str) -> None:
        self.watch, self.stage = watch, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.watch.seconds[self.stage] = self.watch.seconds.get(self.stage, 0.0) + time.perf_counter() - self.start

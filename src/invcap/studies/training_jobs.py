"""Training many models in worker processes, one thread each: notebook 05 and the final table hand
their trainings to ``run_jobs``, which balances them over ``workers`` processes (two one-thread
processes use a 2-core machine better than one two-thread process for these layer sizes) and
returns when every network is in the caches; the caller then loads them (``train_one`` with the
same job finds the cached network and trains nothing). A job is a JSON-able dict:

- ``{"kind": "method", "name", "overrides": CaptioningConfig fields, "portable": bool, "weights":
  {term: weight}}``: a registered method (``weights``, optional: ``Method.reweighted``); ``portable``
  trains it on the second numeric path (``PORTABLE_ENV``) into its own cache folder
  (``methods-portable``), so both paths' networks are kept;
- ``{"kind": "mlp-generator" | "mlp-captioner", "config": MLPConfig fields}``: a baseline MLP.

A job whose loss turns non-finite is reported (job key -> error), not retried, and the others go
on. ``python -m invcap.studies.training_jobs FILE`` is the worker's entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from invcap import baselines as bl
from invcap.methods import method, method_key, train_method
from invcap.repro import seed_everything

__all__ = ["PORTABLE_ENV", "ONE_THREAD", "job_key", "train_one", "run_jobs", "errors", "default_workers"]

# The second numeric path (issue 11) on an AVX2 machine: generic kernels, SSE4.2 MKL, one thread.
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "INVCAP_THREADS": "1"}
ONE_THREAD = {"INVCAP_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def default_workers() -> int:
    """``INVCAP_WORKERS``, else ``INVCAP_THREADS`` (the threads a run may use: `make test` gives a
    notebook one), else the machine's cores up to 2."""
    fallback = os.environ.get("INVCAP_THREADS", max(1, min(2, os.cpu_count() or 1)))
    return max(1, int(os.environ.get("INVCAP_WORKERS", fallback)))


def job_key(job: Mapping[str, Any]) -> str:
    return json.dumps(job, sort_keys=True)


def train_one(job: Mapping[str, Any], train, progress: bool = False):
    """Train (or load from the cache) what ``job`` names; the same call in a worker and here."""
    if job["kind"] == "method":
        spec = method(job["name"]).reweighted(job.get("weights"))
        overrides = dict(job["overrides"])
        checkpoint: Any = True
        if job.get("portable"):
            from invcap.cache import cached_path

            key = method_key(spec, spec.config(**overrides), train.latents, train.caption_embeddings)
            checkpoint = cached_path("methods-portable", spec.name, key)
        return train_method(spec, train.latents, train.caption_embeddings, checkpoint=checkpoint, progress=progress,
                            **overrides)
    config = bl.MLPConfig(**job["config"])
    if job["kind"] == "mlp-generator":
        return bl.train_mlp(train.caption_embeddings, train.latents, config, name="mlp-generator")[0]
    return bl.train_mlp(train.latents, train.caption_embeddings, config, name="mlp-captioner")[0]


def errors(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """job key -> error, for the jobs of ``run_jobs`` whose loss turned non-finite."""
    return {k: r["error"] for k, r in reports.items() if "error" in r}


def _claim(todo: Path) -> Path | None:
    """Take the next job file of ``todo`` (the most costly first); a rename is atomic, so two
    workers never take the same job."""
    for path in sorted(todo.glob("*.json")):
        taken = path.with_suffix(f".taken-{os.getpid()}")
        try:
            path.rename(taken)
        except FileNotFoundError:   # another worker was faster
            continue
        return taken
    return None


def _worker(folder: Path, queue: str) -> int:
    """Train jobs from ``folder/queue`` until none is left; report each in ``folder/done``."""
    from invcap.features import load_features

    data = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads((folder / "data.json").read_text()).items()}
    train = None
    while (taken := _claim(folder / queue)) is not None:
        if train is None:
            seed_everything(0)
            train = load_features("train", device="cpu", progress=False, **data)   # notebook 02's autoencoder
        job = json.loads(taken.read_text())
        start = time.perf_counter()
        report: dict[str, Any] = {"job": job}
        try:
            train_one(job, train)
        except ValueError as error:   # a non-finite loss: reported, the other jobs go on
            report["error"] = str(error)
        report["seconds"] = time.perf_counter() - start
        (folder / "done" / taken.with_suffix(".json").name).write_text(json.dumps(report))
    return 0


def _cost(job: Mapping[str, Any]) -> float:
    """A rough relative cost, to start the longest jobs first."""
    if job["kind"] != "method":
        return 0.25 * job["config"]["steps"]
    spec = method(job["name"])
    depth = spec.captioning.get("depth", job["overrides"].get("depth", 6))
    inverses = sum(t.latent is not None for t in spec.terms) or 0.4   # inverse passes dominate a step
    return job["overrides"]["steps"] * depth * (1 + inverses) * (1.5 if job.get("portable") else 1.0)


def _in_process(jobs: Sequence[Mapping[str, Any]], train) -> dict[str, dict[str, Any]]:
    """One worker and no second numeric path: train here, one job after the other (no process start,
    no second copy of the features and the sentence model)."""
    reports: dict[str, dict[str, Any]] = {}
    for job in sorted(jobs, key=_cost, reverse=True):
        start = time.perf_counter()
        report: dict[str, Any] = {}
        try:
            train_one(job, train)
        except ValueError as error:   # a non-finite loss: reported, the other jobs go on
            report["error"] = str(error)
        reports[job_key(job)] = {**report, "seconds": time.perf_counter() - start}
    return reports


def run_jobs(jobs: Sequence[Mapping[str, Any]], data: Mapping[str, Any], workers: int | None = None,
             train=None) -> dict[str, dict[str, Any]]:
    """Train ``jobs`` in at most ``workers`` processes of one thread each, the most costly first:
    a worker on the second numeric path (``PORTABLE_ENV``) for the portable jobs, the others on the
    default path, each taking the next job when it is done with one. With one worker, no portable
    job and the train split's features given (``train``), they are trained in this process instead.
    Returns job key -> {"seconds", "error" (when its loss turned non-finite)}."""
    workers = default_workers() if workers is None else max(1, workers)
    jobs = list({job_key(j): dict(j) for j in jobs}.values())   # the same job twice is trained once
    if not jobs:
        return {}
    if workers == 1 and train is not None and not any(j.get("portable") for j in jobs):
        return _in_process(jobs, train)
    reports: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="invcap-jobs-") as name:
        folder = Path(name)
        (folder / "data.json").write_text(json.dumps(dict(data)))
        for queue in ("default", "portable", "done"):
            (folder / queue).mkdir()
        for rank, job in enumerate(sorted(jobs, key=_cost, reverse=True)):
            (folder / ("portable" if job.get("portable") else "default") / f"{rank:05d}.json").write_text(json.dumps(job))
        queues = (["portable"] if any(j.get("portable") for j in jobs) else []) + ["default"] * workers
        running: list[subprocess.Popen] = []
        while queues or running:
            while queues and len(running) < workers:
                queue = queues.pop(0)
                env = {**os.environ, **ONE_THREAD, **(PORTABLE_ENV if queue == "portable" else {})}
                running.append(subprocess.Popen([sys.executable, "-m", "invcap.studies.training_jobs", str(folder),
                                                 queue], env=env))
            time.sleep(0.5)
            for process in [p for p in running if p.poll() is not None]:
                running.remove(process)
                if process.returncode != 0:
                    for other in running:
                        other.kill()
                    raise RuntimeError(f"a training worker failed (exit {process.returncode}); its output is above")
        for path in (folder / "done").glob("*.json"):
            report = json.loads(path.read_text())
            reports[job_key(report.pop("job"))] = report
    missing = [j for j in jobs if job_key(j) not in reports]
    if missing:
        raise RuntimeError(f"{len(missing)} training jobs were not done (first: {missing[0]})")
    return reports


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1]), sys.argv[2]))

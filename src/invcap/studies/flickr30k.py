"""``make flickr30k``: the whole study on a Flickr30k folder, stage by stage, each timed and measured.

    python -m invcap.studies.flickr30k run --params params/flickr30k.yaml --set DATA_ROOT=/data/f30k \\
        [--set DEVICE=cuda] --out runs/flickr30k [--force]
    python -m invcap.studies.flickr30k check OUT          # what make test-flickr30k asserts

Stages, each in its own process (so that its peak resident memory is its own, read from the kernel's
``wait4`` accounting, which includes the process's children: the Jupyter kernel, decoding workers):

1. ``images``: every split decoded once into the uint8 image cache (``features.get_images``).
2. ``captions``: every caption encoded once into the embedding cache (``features.encode_captions``).
3. notebooks 02-05, one per process, through ``invcap.studies.notebooks`` (the parameters file, its
   per-notebook sections, ``--set`` overrides); they find the caches above and reuse them.
4. the post-notebook studies in ``POST_STUDIES`` that exist, as ``python -m MODULE --params F --set ...``.

``--together`` (``make test-flickr30k``) runs stages 1-2 inside the driver and the notebooks in one runner
process: a process start and a torch import less per stage, their peak memory then shared.

``OUT/results/flickr30k.json`` records every finished stage (seconds, peak memory, parameters) with a
``run_record`` (device, data key, timings). A rerun skips stages finished with the same parameters, so
a killed run resumes at the stage it died in, and that stage reuses its caches and checkpoints;
``--force`` reruns everything (still from the caches). Caches live in ``INVCAP_CACHE_DIR``
(``make flickr30k`` puts them in ``OUT/cache``), so nothing committed is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["STAGES", "NOTEBOOKS", "POST_STUDIES", "parse_stages", "run_stages", "check_run", "run_child", "RECORD"]

NOTEBOOKS = ("02_autoencoder", "03_captioning", "04_inversion_analysis", "05_closing_the_inversion_gap")
POST_STUDIES = ("invcap.studies.final_table",)  # run after the notebooks when they exist
STAGES = ("images", "captions", *NOTEBOOKS, *POST_STUDIES)
RECORD = "flickr30k.json"
CACHE_STAGES = ("images", "captions")


def run_child(command: Sequence[str], env: Mapping[str, str] | None = None, log: Path | None = None
              ) -> tuple[int, float, float]:
    """Run ``command``; returns (exit code, wall seconds, peak resident MB of it and its children).
    A SIGTERM sent to this process (``timeout``, a deadline) stops the child's whole process group
    (kernel, workers) and still returns, so that the caller can record how far the stage got."""
    start = time.perf_counter()
    out = open(log, "a") if log is not None else None
    child = None

    def stop(signum, frame):  # forward to the stage's process group; wait4 below then returns
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        child = subprocess.Popen(list(command), env={**os.environ, **(env or {})}, stdout=out, stderr=out,
                                 start_new_session=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if out is not None:
            out.close()
    return child.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024  # Linux: KiB


def _common(params: Mapping[str, Any]) -> dict[str, Any]:
    from invcap.features import data_key

    root = params.get("DATA_ROOT")
    if not root:
        raise ValueError("DATA_ROOT is not set: make flickr30k DATA_ROOT=/path/to/flickr30k")
    size, seed = int(params.get("IMAGE_SIZE", 64)), int(params.get("SEED", 0))
    return {"dataset": params.get("DATASET", "flickr30k"), "root": str(root), "image_size": size, "seed": seed,
            "data_key": data_key(params.get("DATASET", "flickr30k"), root, size, seed)}


def _splits(common: Mapping[str, Any]) -> list[str | None]:
    from invcap.features import get_dataset

    everything = get_dataset(None, common["dataset"], common["root"], common["image_size"], common["seed"])
    return everything.available_splits or [None]


def stage_images(params: Mapping[str, Any]) -> dict[str, Any]:
    """Decode every split into the uint8 image cache."""
    from invcap.features import get_dataset, get_images

    c = _common(params)
    counts = {}
    for split in _splits(c):
        data = get_dataset(split, c["dataset"], c["root"], c["image_size"], c["seed"])
        counts[str(split)] = len(get_images(data, c["data_key"]))
    return {"images": counts}


def stage_captions(params: Mapping[str, Any]) -> dict[str, Any]:
    """Encode every caption of every split into the sentence encoder's embedding cache."""
    from invcap.features import encode_captions, get_dataset, get_encoder

    c = _common(params)
    encoder = get_encoder(device=params.get("DEVICE", "auto"))
    counts = {}
    for split in _splits(c):
        data = get_dataset(split, c["dataset"], c["root"], c["image_size"], c["seed"])
        texts = [t for caps in data.captions for t in caps]
        counts[str(split)] = len(encode_captions(encoder, texts))
    return {"captions": counts}


NB_TIMEOUT = 4 * 3600  # seconds per notebook cell: a full-size CPU run trains for long in one cell


def _stage_command(group: Sequence[str], params_file: Path, sets: Sequence[str], out: Path) -> list[str] | None:
    """The command of one stage, or of consecutive notebook stages run by one runner process."""
    from invcap.io import repo_root

    flags = [x for s in sets for x in ("--set", s)]
    stage = group[0]
    if stage in CACHE_STAGES:
        return [sys.executable, "-m", "invcap.studies.flickr30k", "stage", stage, "--params", str(params_file), *flags]
    if stage in NOTEBOOKS:
        notebooks = [str(repo_root() / "notebooks" / f"{name}.ipynb") for name in group]
        return [sys.executable, "-m", "invcap.studies.notebooks", "run", "--params", str(params_file), *flags,
                "--out", str(out), "--timeout", str(NB_TIMEOUT), *notebooks]
    if importlib.util.find_spec(stage) is None:
        return None  # a post-notebook study that is not written yet
    return [sys.executable, "-m", stage, "--params", str(params_file), *flags]


def parse_stages(text: str) -> list[str]:
    """``"images,02_autoencoder"`` -> the stages in ``STAGES`` order; ValueError naming an unknown one."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise ValueError(f"unknown stage(s) {unknown or text!r}; choose from {', '.join(STAGES)}")
    return [s for s in STAGES if s in names]


def _groups(pending: Sequence[str], together: bool) -> list[list[str]]:
    """One stage per process; with ``together``, consecutive notebooks share one runner process
    (saves its start, ~10 s per notebook on a small CPU; their peak memory is then the group's)."""
    groups: list[list[str]] = []
    for stage in pending:
        if together and groups and stage in NOTEBOOKS and groups[-1][-1] in NOTEBOOKS:
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def run_stages(params_file: str | Path, sets: Sequence[str], out: str | Path, force: bool = False,
               stages: Sequence[str] = STAGES, together: bool = False) -> dict[str, Any]:
    """Run the stages (module docstring); returns the record written to ``OUT/results/flickr30k.json``."""
    from invcap.studies.notebooks import TIMINGS_FILE, parse_overrides, params_for, read_params

    params_file, out = Path(params_file).resolve(), Path(out).resolve()
    params = read_params(params_file)
    overrides = parse_overrides(sets)
    shared = params_for("flickr30k", params, overrides)
    common = _common(shared)
    (out / "results").mkdir(parents=True, exist_ok=True)
    path = out / "results" / RECORD
    done = _read(path).get("stages", {})
    env = {"INVCAP_OUTPUT_DIR": str(out), "INVCAP_PROGRESS": os.environ.get("INVCAP_PROGRESS", "final")}
    own = {stage: params_for(stage, params, overrides) for stage in stages}
    pending = []
    for stage in stages:
        if not force and done.get(stage, {}).get("parameters") == own[stage] and done[stage].get("status") == "done":
            print(f"== {stage}: finished before ({done[stage]['seconds']:.0f} s), skipped", flush=True)
        else:
            pending.append(stage)
    for group in _groups(pending, together):
        command = _stage_command(group, params_file, sets, out)
        if command is None:
            done[group[0]] = {"status": "not available", "parameters": own[group[0]]}
            print(f"== {group[0]}: not available yet, skipped", flush=True)
            continue
        print(f"== {' + '.join(group)}", flush=True)
        before = _read(out / "results" / TIMINGS_FILE)
        if together and group[0] in CACHE_STAGES:
            code, seconds, peak = _in_process(group[0], shared, env)
        else:
            code, seconds, peak = run_child(command, env)
        rows = _group_rows(group, code, seconds, peak, before, _read(out / "results" / TIMINGS_FILE))
        for stage, row in rows.items():
            done[stage] = {**row, "parameters": own[stage], **_conditions()}
            print(f"   {stage}: {row['seconds']:.0f} s, peak {row['peak_rss_mb']} MB"
                  + ("" if row["status"] == "done" else f", {row['status'].upper()}"), flush=True)
        _write_record(path, shared, common, params_file, done)
        if code != 0:
            raise RuntimeError(f"stage {list(rows)[-1]} {rows[list(rows)[-1]]['status']}; rerun to resume from it")
    return _write_record(path, shared, common, params_file, done)


def _in_process(stage: str, params: Mapping[str, Any], env: Mapping[str, str]) -> tuple[int, float, float]:
    """A cache-filling stage in this process (``--together``: no process start, no second torch
    import); its peak memory is then this process's so far."""
    import resource
    import traceback

    from invcap.studies.notebooks import environment

    start = time.perf_counter()
    code = 0
    with environment(env):
        try:
            print(json.dumps((stage_images if stage == "images" else stage_captions)(params)), flush=True)
        except Exception:  # reported like a failed child: the driver records it and stops
            traceback.print_exc()
            code = 1
    return code, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _group_rows(group: Sequence[str], code: int, seconds: float, peak: float, before: Mapping[str, Any],
                after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each stage's row after its process ended. A stage alone gets the process's wall time; in a
    shared runner process each notebook gets the runner's own time for it (results/notebooks.json,
    new entries only), the first one without an entry the rest (it failed or was stopped there)."""
    status = "done" if code == 0 else ("stopped (SIGTERM)" if code == -signal.SIGTERM else f"failed (exit {code})")
    if len(group) == 1:
        return {group[0]: {"status": status, "seconds": round(seconds, 1), "peak_rss_mb": round(peak)}}
    shared = {"stages": list(group), "seconds": round(seconds, 1)}
    rows, used = {}, 0.0
    for stage in group:
        entry = after.get(stage)
        if entry is not None and entry != before.get(stage):
            rows[stage] = {"status": "done", "seconds": entry["seconds"], "peak_rss_mb": round(peak),
                           "shared_process": shared}
            used += entry["seconds"]
        else:
            rows[stage] = {"status": status if code != 0 else "failed (no timing recorded)",
                           "seconds": round(max(0.0, seconds - used), 1), "peak_rss_mb": round(peak),
                           "shared_process": shared}
            break
    return rows


def _write_record(path: Path, shared: Mapping[str, Any], common: Mapping[str, Any], params_file: Path,
                  done: Mapping[str, Any]) -> dict[str, Any]:
    from invcap.io import write_json_atomic
    from invcap.repro import run_record

    record = {"run": run_record(shared, common["seed"], _device(shared), data=common["data_key"],
                                timings={s: v["seconds"] for s, v in done.items() if "seconds" in v}),
              "params_file": str(params_file), "stages": dict(done)}
    write_json_atomic(path, record)
    return record


def _conditions() -> dict[str, Any]:
    """What a stage's time depends on besides its parameters: its thread count (``heavy`` gives one,
    ``INVCAP_THREADS``) and the code (commit), since a resumed run may mix stages of several calls."""
    from invcap.repro import git_state

    threads = os.environ.get("INVCAP_THREADS") or os.environ.get("OMP_NUM_THREADS")
    state = git_state()
    return {"threads": int(threads) if threads and threads.isdigit() else os.cpu_count(),
            "git_commit": state["commit"], "git_dirty": state["dirty"]}


def _device(params: Mapping[str, Any]):
    from invcap.repro import resolve_device

    try:
        return resolve_device(params.get("DEVICE", "auto"))
    except ValueError:
        return None


def check_run(out: str | Path) -> list[str]:
    """What is wrong with a finished run under ``out`` (empty when nothing): every notebook 02-05
    executed without an error output, and every results file records the device, the data key and
    timings."""
    out = Path(out)
    problems = []
    for name in NOTEBOOKS:
        path = out / f"{name}.ipynb"
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        cells = json.loads(path.read_text()).get("cells", [])
        errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            problems.append(f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue', '')[:200]}")
        if not any(c.get("outputs") for c in cells if c.get("cell_type") == "code"):
            problems.append(f"{path.name} holds no outputs (not executed)")
    results = sorted((out / "results").glob("*.json"))
    if not results:
        problems.append(f"no results files under {out / 'results'}")
    for path in results:
        if path.name == "notebooks.json":  # the runner's wall-time table, one entry per notebook
            continue
        run = json.loads(path.read_text()).get("run")
        if not isinstance(run, dict):
            problems.append(f"{path.name}: no 'run' record")
            continue
        if not str(run.get("data") or "").startswith("flickr30k:"):
            problems.append(f"{path.name}: run.data is {run.get('data')!r}, not a flickr30k data key")
        if not run.get("device"):
            problems.append(f"{path.name}: run.device missing")
        if not run.get("timings"):
            problems.append(f"{path.name}: run.timings empty")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="every stage (make flickr30k)")
    stage = commands.add_parser("stage", help="one cache-filling stage (run starts these)")
    stage.add_argument("name", choices=["images", "captions"])
    for p in (run, stage):
        p.add_argument("--params", required=True, help="YAML parameters file (params/flickr30k.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--out", required=True, help="folder for notebooks, figures, results")
    run.add_argument("--force", action="store_true", help="rerun stages that finished before")
    run.add_argument("--together", action="store_true",
                     help="image decode and caption encoding in this process, consecutive notebooks in one runner "
                          "process (faster on a small CPU; peak memory is then shared, not per stage)")
    run.add_argument("--stages", default=",".join(STAGES),
                     help=f"comma-separated subset, run in this order (default: all of {','.join(STAGES)})")
    check = commands.add_parser("check", help="assert a finished run's outputs (make test-flickr30k)")
    check.add_argument("out")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            problems = check_run(args.out)
            for problem in problems:
                print(f"flickr30k check: {problem}", file=sys.stderr)
            print(f"flickr30k check: {len(problems)} problems in {args.out}")
            return 1 if problems else 0
        if args.command == "stage":
            from invcap.studies.notebooks import parse_overrides, params_for, read_params

            own = params_for("flickr30k", read_params(args.params), parse_overrides(args.set))
            print(json.dumps((stage_images if args.name == "images" else stage_captions)(own)))
            return 0
        run_stages(args.params, args.set, args.out, args.force, parse_stages(args.stages), args.together)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

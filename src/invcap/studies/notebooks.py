"""Running the notebooks: ``make paper`` (in place) and ``make flickr30k`` (into a folder).

    python -m invcap.studies.notebooks run [--params FILE.yaml] [--out DIR] [--timeout S] NOTEBOOK ...
    python -m invcap.studies.notebooks strip NOTEBOOK ...

``run`` executes each notebook with papermill on the ``invcap`` kernel, in order, inside
``notebooks/`` (so relative paths behave as in JupyterLab). ``--params`` is a YAML file of notebook
parameters handed to every notebook, as ``papermill -f`` does (a notebook takes the names its
parameters cell defines; papermill warns about the others). A key that names a notebook (its stem,
``03_captioning``, or its number, ``03``) holds a mapping of parameters for that notebook only, so
one file can give notebook 03 and notebook 05 different ``STEPS``. ``--set NAME=VALUE`` (repeatable;
the value is read as YAML) overrides a parameter in every notebook, sections included: ``make
flickr30k DEVICE=cuda`` reaches every notebook's ``DEVICE`` this way. Without ``--out`` the notebooks are
executed in place and write to the committed ``figures/`` and ``results/``; with ``--out DIR`` the
executed notebooks go to ``DIR/`` and their figures and results to ``DIR/figures`` and
``DIR/results`` (``INVCAP_OUTPUT_DIR``), so nothing committed is touched. Progress bars print one
final line (``INVCAP_PROGRESS=final``). After each notebook papermill's per-cell timing metadata is
stripped (it changes on every run) and its wall time is recorded in ``results/notebooks.json``.

A notebook that fails stops the run with papermill's error (the partly executed notebook is
saved); rerunning resumes cheaply because every stage reuses its caches and checkpoints.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from invcap.io import read_json, repo_root, results_dir, write_json_atomic, write_text_atomic

__all__ = ["run_notebooks", "strip_notebook", "read_params", "parse_overrides", "params_for", "KERNEL",
           "TIMINGS_FILE"]

KERNEL = "invcap"
TIMINGS_FILE = "notebooks.json"
NOISY_CELL_KEYS = ("papermill", "execution")


def strip_notebook(path: str | Path) -> None:
    """Remove papermill's notebook and per-cell timing metadata, keeping every output."""
    path = Path(path)
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("papermill", None)
    for cell in nb.get("cells", []):
        for key in NOISY_CELL_KEYS:
            cell.get("metadata", {}).pop(key, None)
    write_text_atomic(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def read_params(path: str | Path | None) -> dict[str, Any]:
    """The parameters in a YAML file (a mapping of NAME: value, and of section: mapping), or {} for
    None. ``extends: other.yaml`` (relative to the file) starts from that file's parameters: a
    shortened run then states only what it shortens, and sections merge key by key."""
    if path is None:
        return {}
    import yaml  # papermill's dependency

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameters file {path} not found")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValueError(f"{path} must be a YAML mapping of NOTEBOOK_PARAMETER: value, got {type(params).__name__}")
    base = params.pop("extends", None)
    if base is None:
        return params
    merged = read_params(path.parent / base)
    for key, value in params.items():
        if _is_section(key, value) and _is_section(key, merged.get(key)):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["DEVICE=cuda", "STEPS=10"]`` -> ``{"DEVICE": "cuda", "STEPS": 10}`` (values read as YAML)."""
    import yaml

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set expects NAME=VALUE, got {pair!r}")
        out[name.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def _is_section(key: str, value: Any) -> bool:
    """Parameters are UPPER_CASE; a lower-case key holding a mapping is one notebook's (or one
    post-notebook study's, e.g. ``final_table``) section."""
    return isinstance(value, dict) and not key.isupper()


def params_for(notebook: str | Path, params: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
    """The parameters one notebook gets: the shared entries, then its own section (by stem or
    number), then ``overrides``."""
    stem = Path(notebook).stem
    merged = {k: v for k, v in params.items() if not _is_section(k, v)}
    for key in (stem[:2], stem):
        if _is_section(key, params.get(key)):
            merged.update(params[key])
    merged.update(overrides or {})
    return merged


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore what was there before."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _record_timing(name: str, seconds: float, params: Mapping[str, Any]) -> None:
    from invcap.repro import device_record, resolve_device

    try:  # the device the notebook was asked to use ("auto" resolved here the same way)
        device = resolve_device(params.get("DEVICE", "cpu"))
    except (ValueError, RuntimeError):
        device = None
    path = results_dir() / TIMINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # `make paper` runs two chains of notebooks side by side: the read-modify-write is under a lock
    # so that neither chain's entry is lost.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            table = read_json(path)
        except (FileNotFoundError, json.JSONDecodeError):
            table = {}
        table[name] = {"seconds": round(seconds, 1), "parameters": dict(params), "device": device_record(device)}
        write_json_atomic(path, dict(sorted(table.items())))


def run_notebooks(notebooks: Sequence[str | Path], out: str | Path | None = None,
                  params: Mapping[str, Any] | None = None, timeout: int = 1800,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Execute ``notebooks`` in order (see the module docstring); returns seconds per notebook."""
    import papermill

    params = dict(params or {})
    paths = [Path(nb).resolve() for nb in notebooks]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"notebooks not found: {missing}")
    env = {"INVCAP_PROGRESS": os.environ.get("INVCAP_PROGRESS", "final")}
    if out is not None:
        out = Path(out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        env["INVCAP_OUTPUT_DIR"] = str(out)
    seconds: dict[str, float] = {}
    with environment(env):
        for path in paths:
            target = path if out is None else out / path.name
            print(f"== {path.name}" + ("" if out is None else f" -> {target}"), flush=True)
            start = time.perf_counter()
            own = params_for(path, params, overrides)
            papermill.execute_notebook(str(path), str(target), parameters=own, kernel_name=KERNEL,
                                       cwd=str(repo_root() / "notebooks"), progress_bar=False,
                                       execution_timeout=timeout)
            seconds[path.name] = time.perf_counter() - start
            strip_notebook(target)
            _record_timing(path.stem, seconds[path.name], own)
            print(f"   {path.name}: {seconds[path.name]:.0f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute notebooks with papermill")
    run.add_argument("notebooks", nargs="+")
    run.add_argument("--params", default=None, help="YAML file of notebook parameters (as papermill -f)")
    run.add_argument("--out", default=None, help="folder for the executed notebooks, figures and results")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="override a parameter in every notebook (repeatable; value read as YAML)")
    run.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    strip = commands.add_parser("strip", help="remove papermill's timing metadata from executed notebooks")
    strip.add_argument("notebooks", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "strip":
        for name in args.notebooks:
            strip_notebook(name)
        return 0
    try:
        run_notebooks(args.notebooks, args.out, read_params(args.params), args.timeout, parse_overrides(args.set))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

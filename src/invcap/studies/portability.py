"""How far the study's headline numbers move between two numeric paths (issue 11).

``make test`` re-executes every notebook; its figures and results go to ``NBVAL_OUT``. Run it
twice from fresh clones, once on the default path and once on a second one (``make test-portable``:
CPU capability AVX2, MKL AVX2, one thread), keeping both folders, then

    python -m invcap.studies.portability DEFAULT_OUT/results OTHER_OUT/results [--labels default other]

reads every study module's ``KEY_NUMBERS`` from both folders and writes ``results/portability.json``
(both values, the absolute and relative difference per number, and each run's device record);
its README block is the small table under "Reproducibility".
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable

from invcap.io import read_json, results_dir, write_json_atomic

__all__ = ["key_number_functions", "compare", "render", "README_BLOCKS", "RESULTS_FILE", "main"]

RESULTS_FILE = "portability.json"


def key_number_functions() -> dict[str, Callable[[Path], float]]:
    """label -> function(results folder) -> number, from every study module's ``KEY_NUMBERS``."""
    from invcap.studies.readme import study_modules

    found: dict[str, Callable[[Path], float]] = {}
    for module in study_modules():
        found.update(getattr(module, "KEY_NUMBERS", {}))
    return found


def _device(folder: Path) -> dict | None:
    """The device record of the run that wrote ``folder``: the runner's timing file (make paper) or,
    under nbval, which writes none, the first results file with a run record."""
    try:
        table = read_json(folder / "notebooks.json")
        return next(iter(table.values()), {}).get("device")
    except FileNotFoundError:
        pass
    for path in sorted(folder.glob("*.json")):
        try:
            run = read_json(path).get("run")
        except (ValueError, AttributeError):
            continue
        if isinstance(run, dict) and run.get("device"):
            return run["device"]
    return None


def compare(first: Path, second: Path, labels: tuple[str, str] = ("default", "portable")) -> dict:
    """Both runs' key numbers and their differences (numbers a run lacks are reported, not fatal)."""
    rows, missing = [], []
    for label, read in key_number_functions().items():
        try:
            a, b = float(read(first)), float(read(second))
        except (FileNotFoundError, KeyError, IndexError, TypeError, ValueError) as err:
            missing.append({"number": label, "why": f"{type(err).__name__}: {err}"})
            continue
        diff = abs(a - b)
        scale = max(abs(a), abs(b))
        rows.append({"number": label, labels[0]: a, labels[1]: b, "abs_diff": diff,
                     "rel_diff": diff / scale if scale > 0 and math.isfinite(scale) else 0.0})
    return {"labels": list(labels), "folders": [str(first), str(second)],
            "devices": {labels[0]: _device(first), labels[1]: _device(second)}, "rows": rows, "missing": missing}


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 0.01 and abs(value) < 1e4:
        return f"{value:.3g}"
    return f"{value:.2e}"


def render(results: Path) -> str:
    """The README table: each key number on both paths and how far apart they are."""
    if not (results / RESULTS_FILE).exists():  # before the first comparison: say how to make one
        return ("Not measured in this results folder yet: run `make test NBVAL_OUT=runs/default` and "
                "`make test-portable NBVAL_OUT=runs/portable`, then `python -m invcap.studies.portability "
                "runs/default/results runs/portable/results`.")
    data = read_json(results / RESULTS_FILE, "python -m invcap.studies.portability")
    a, b = data["labels"]
    devices = data.get("devices", {})

    def where(label: str) -> str:
        d = devices.get(label) or {}
        return f"{d.get('cpu_capability', '?')}, {d.get('threads', '?')} thread(s)"

    lines = [f"| number | {a} ({where(a)}) | {b} ({where(b)}) | difference |", "|---|---|---|---|"]
    for row in data["rows"]:
        rel = f" ({100 * row['rel_diff']:.1f} %)" if row["rel_diff"] else ""
        lines.append(f"| {row['number']} | {_fmt(row[a])} | {_fmt(row[b])} | {_fmt(row['abs_diff'])}{rel} |")
    if data.get("missing"):
        lines.append("")
        lines.append("Not compared (missing in a run): " + ", ".join(m["number"] for m in data["missing"]) + ".")
    return "\n".join(lines)


README_BLOCKS = {"portability": render}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="results folder of the default run")
    parser.add_argument("second", type=Path, help="results folder of the second numeric path")
    parser.add_argument("--labels", nargs=2, default=("default", "portable"))
    args = parser.parse_args(argv)
    for folder in (args.first, args.second):
        if not folder.is_dir():
            print(f"error: {folder} is not a results folder (NBVAL_OUT/results of a make test run)", file=sys.stderr)
            return 2
    out = compare(args.first, args.second, tuple(args.labels))
    path = write_json_atomic(results_dir() / RESULTS_FILE, out)
    print(render(results_dir()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The README's "Results at a glance": one table row per claim of the paper, rendered from ``results/``.

Each study module that settles a claim defines ``glance_rows(results) -> list[str]`` (Markdown table
rows: the claim, what this study measured, the verdict computed from those numbers) or, for a single
row, ``glance_row(results) -> str``. This module only collects them, in the order of
``invcap.studies.readme.MODULES``; a study whose results file is missing says so in its row instead
of stopping the block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["row_functions", "provenance", "render", "README_BLOCKS"]

HEADER = ["| paper's claim | this study | verdict |", "|---|---|---|"]


def row_functions() -> list[tuple[str, Callable[[Path], list[str]]]]:
    """(module name, function of the results folder -> rows) for every module that has rows."""
    from invcap.studies.readme import study_modules

    found = []
    for module in study_modules():
        if hasattr(module, "glance_rows"):
            found.append((module.__name__, module.glance_rows))
        elif hasattr(module, "glance_row"):
            found.append((module.__name__, lambda results, one=module.glance_row: [one(results)]))
    return found


def provenance(results: Path) -> str:
    """Which commit (and whether its code was clean) each results file's run came from."""
    import json

    by_commit: dict[tuple[str, object], list[str]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            run = json.loads(path.read_text()).get("run")
        except (ValueError, AttributeError):
            continue
        if isinstance(run, dict) and run.get("git_commit"):
            key = (str(run["git_commit"])[:10], run.get("git_dirty"))
            by_commit.setdefault(key, []).append(path.name)
    parts = [f"`{commit}` ({'clean' if dirty is False else 'dirty' if dirty else 'dirty state unknown'}): "
             f"{', '.join(names)}" for (commit, dirty), names in by_commit.items()]
    return "Runs by commit: " + "; ".join(parts) + "." if parts else "No results file records its commit yet."


def render(results: Path) -> str:
    lines = list(HEADER)
    for name, rows in row_functions():
        try:
            lines.extend(rows(results))
        except FileNotFoundError as err:  # that study has not run into this results folder
            why = str(err).replace(f"{results}/", "")  # "captioning.json not found; notebooks/03... writes it"
            lines.append(f"| ({name.rsplit('.', 1)[-1]}) | not measured here: {why} | – |")
    return "\n".join(lines) + "\n\n" + provenance(results)


README_BLOCKS = {"overview": render}

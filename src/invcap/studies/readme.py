"""The README's number blocks, rendered from ``results/`` by code.

Every block sits between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in README.md.
Each study module (and ``invcap.bench``) lists the blocks it renders in ``README_BLOCKS``
(name -> function of the results folder returning Markdown). ``make paper`` runs
``python -m invcap.studies.readme`` to rewrite every block; ``--check`` only reports the blocks
that disagree with their results files (``tests/test_readme.py`` fails on them).

    python -m invcap.studies.readme [--check] [--readme README.md] [--results results/] [NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

from invcap.io import marked_block, replace_marked_block, repo_root, results_dir, write_text_atomic

__all__ = ["MODULES", "study_modules", "renderers", "render_all", "update_readme", "stale_blocks", "main"]

# Modules that contribute blocks, in README order.
MODULES = (
    "invcap.studies.overview",
    "invcap.studies.nb01_toy_invertibility",
    "invcap.studies.nb02_autoencoder",
    "invcap.studies.nb03_captioning",
    "invcap.studies.nb04_inversion_analysis",
    "invcap.studies.nb05_closing_the_inversion_gap",
    "invcap.studies.final_table",
    "invcap.studies.flickr30k_rehearsal",
    "invcap.studies.portability",
    "invcap.bench",
)

Renderer = Callable[[Path], str]


def study_modules() -> list[ModuleType]:
    """Every module of ``MODULES`` that exists, imported, in README order (a study that is not
    written yet is skipped; an import error inside one is raised)."""
    found = []
    for name in MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
    return found


def renderers() -> dict[str, Renderer]:
    """name -> renderer, from every module of ``MODULES`` that exists and defines README_BLOCKS."""
    found: dict[str, Renderer] = {}
    for module in study_modules():
        for block, render in getattr(module, "README_BLOCKS", {}).items():
            if block in found:
                raise ValueError(f"README block {block!r} is rendered by two modules")
            found[block] = render
    return found


def render_all(readme_text: str, results: Path, names: list[str] | None = None) -> tuple[str, list[str]]:
    """(new text, names of the blocks rendered). A block named in ``names`` that the README lacks
    is a ValueError; blocks the README lacks are otherwise skipped."""
    table = renderers()
    unknown = [n for n in (names or []) if n not in table]
    if unknown:
        raise ValueError(f"unknown README blocks {unknown}; known: {sorted(table)}")
    done = []
    for name in names or list(table):
        if marked_block(readme_text, name) is None:
            if names:
                raise ValueError(f"README has no <!-- results:{name} --> block")
            continue
        readme_text = replace_marked_block(readme_text, name, table[name](results))
        done.append(name)
    return readme_text, done


def stale_blocks(readme: Path, results: Path) -> list[str]:
    """Names of the README blocks whose text differs from what their results files render."""
    text = readme.read_text()
    table = renderers()
    return [name for name, render in table.items()
            if (current := marked_block(text, name)) is not None and current != render(results).strip("\n")]


def update_readme(readme: Path, results: Path, names: list[str] | None = None) -> list[str]:
    """Rewrite the blocks (all, or ``names``); returns the names of those that changed."""
    text = readme.read_text()
    before = {n: marked_block(text, n) for n in renderers()}
    new, done = render_all(text, results, names)
    if new != text:
        write_text_atomic(readme, new)
    return [n for n in done if marked_block(new, n) != before.get(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="blocks to render (default: all)")
    parser.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    parser.add_argument("--readme", type=Path, default=repo_root() / "README.md")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: results_dir())")
    args = parser.parse_args(argv)
    results = args.results or results_dir()
    if args.check:
        stale = stale_blocks(args.readme, results)
        for name in stale:
            print(f"stale README block: {name} (run `python -m invcap.studies.readme {name}`)")
        return 1 if stale else 0
    changed = update_readme(args.readme, results, args.names or None)
    print(f"{args.readme}: {', '.join(changed) if changed else 'no block'} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Small helpers for the notebooks themselves (used by ``make paper``).

``python -m invcap.notebook_tools strip NB.ipynb`` removes papermill's per-cell timing
metadata, which changes on every run and would make every executed notebook show as changed,
while keeping the outputs that nbval checks.

``python -m invcap.notebook_tools readme-toy-table [README.md]`` rewrites the Table 1 in the
README's toy section from ``results/table1.csv`` (``make paper`` runs it after the notebooks), so
the README always shows this run's numbers.

The seed study moved to ``python -m invcap.studies.final_table`` (issue 13).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

from invcap.io import repo_root, results_dir, write_text_atomic

NOISY_CELL_KEYS = ("papermill", "execution")


def strip_notebook(path: str | Path) -> None:
    path = Path(path)
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("papermill", None)
    for cell in nb.get("cells", []):
        for key in NOISY_CELL_KEYS:
            cell.get("metadata", {}).pop(key, None)
    write_text_atomic(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


TOY_SECTION = re.compile(r"(<!-- section:toy -->.*?)(^\| function \| variant \| dtype .*?\n)(?!\|)(.*?<!-- /section:toy -->)",
                         re.S | re.M)


def update_readme_toy_table(readme: str | Path, table_csv: str | Path) -> bool:
    """Replace the Markdown table in ``readme``'s toy section with ``toy.markdown_table`` of the
    rows in ``table_csv``. Returns whether the README changed."""
    from invcap.toy import markdown_table

    readme, table_csv = Path(readme), Path(table_csv)
    if not table_csv.is_file():
        raise FileNotFoundError(f"{table_csv} not found: run notebooks/01_toy_invertibility.ipynb (make paper) first")
    with open(table_csv, newline="") as handle:
        rows = [{k: (v if k in ("function", "variant", "dtype") else float(v)) for k, v in row.items()}
                for row in csv.DictReader(handle)]
    text = readme.read_text()
    match = TOY_SECTION.search(text)
    if match is None:
        raise ValueError(f"{readme} has no table starting '| function | variant | dtype' between "
                         "'<!-- section:toy -->' and '<!-- /section:toy -->'")
    new = text[:match.start(2)] + markdown_table(rows) + "\n" + text[match.end(2):]
    if new != text:
        write_text_atomic(readme, new)
    return new != text


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "strip":
        for name in argv[1:]:
            strip_notebook(name)
        return 0
    if argv and argv[0] == "readme-toy-table" and len(argv) <= 2:
        readme = argv[1] if len(argv) == 2 else repo_root() / "README.md"
        changed = update_readme_toy_table(readme, results_dir() / "table1.csv")
        print(f"{readme}: Table 1 {'updated' if changed else 'already up to date'}")
        return 0
    print("usage: python -m invcap.notebook_tools strip NOTEBOOK.ipynb [...]\n"
          "       python -m invcap.notebook_tools readme-toy-table [README.md]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

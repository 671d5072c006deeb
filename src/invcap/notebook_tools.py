"""Small helpers for the notebooks themselves (used by ``make paper``).

``python -m invcap.notebook_tools strip NB.ipynb`` removes papermill's per-cell timing
metadata, which changes on every run and would make every executed notebook show as changed,
while keeping the outputs that nbval checks.

The seed study moved to ``python -m invcap.studies.final_table`` (issue 13).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from invcap.io import write_text_atomic

NOISY_CELL_KEYS = ("papermill", "execution")


def strip_notebook(path: str | Path) -> None:
    path = Path(path)
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("papermill", None)
    for cell in nb.get("cells", []):
        for key in NOISY_CELL_KEYS:
            cell.get("metadata", {}).pop(key, None)
    write_text_atomic(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "strip":
        for name in argv[1:]:
            strip_notebook(name)
        return 0
    print("usage: python -m invcap.notebook_tools strip NOTEBOOK.ipynb [...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

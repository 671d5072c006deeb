"""What every study module shares: parameters from a notebook, figures shown and saved, and the
``{"run": ..., ...}`` envelope of a results file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, TypeVar

from invcap.io import save_figure

__all__ = ["show", "in_notebook", "params_from_namespace", "NotebookParams"]

T = TypeVar("T", bound="NotebookParams")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill, nbval), False in a script or a test."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def show(fig, name: str | Path) -> Path:
    """Save ``fig`` as a PNG (``invcap.io.save_figure``: a bare name goes to ``figures_dir()``),
    display it inline when running in a notebook, and close it. Returns the PNG's path."""
    import matplotlib.pyplot as plt

    path = save_figure(fig, name)
    if in_notebook():
        from IPython.display import Image, display

        display(Image(filename=str(path)))  # the saved PNG: drawing the figure once, not twice
    plt.close(fig)
    return path


def params_from_namespace(cls: type[T], namespace: Mapping[str, Any]) -> T:
    """``cls(**{field: namespace[FIELD]})`` for every field of the dataclass ``cls`` whose
    upper-case name is in ``namespace`` (a notebook's ``globals()`` after its parameters cell and
    papermill's injected overrides)."""
    values = {f.name: namespace[f.name.upper()] for f in dataclasses.fields(cls) if f.name.upper() in namespace}
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class NotebookParams:
    """Base of every study's ``Params``: field ``name`` is the notebook's parameter ``NAME``."""

    @classmethod
    def from_notebook(cls: type[T], namespace: Mapping[str, Any]) -> T:
        return params_from_namespace(cls, namespace)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

"""Where artifacts live, and how they are written: atomically, so an interrupted run never
leaves a half-written figure, table or checkpoint behind.

Folders (each can be moved with an environment variable):

- ``figures_dir()``  -> ``<repo>/figures``  (``INVCAP_FIGURES_DIR``)
- ``results_dir()``  -> ``<repo>/results``  (``INVCAP_RESULTS_DIR``)
- ``cache_dir()``    -> ``<repo>/.cache``   (``INVCAP_CACHE_DIR``): datasets, embeddings, checkpoints

``INVCAP_OUTPUT_DIR`` moves figures and results together (``make test`` uses it so that
re-running the notebooks under nbval never overwrites the committed artifacts).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch


def repo_root() -> Path:
    """The checkout this package was installed from (editable install), else the working folder."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "invcap").is_dir():
            return parent
    return Path.cwd()


def _folder(env_name: str, default: Path, subdir: str | None = None) -> Path:
    if os.environ.get(env_name):
        path = Path(os.environ[env_name])
    elif subdir is not None and os.environ.get("INVCAP_OUTPUT_DIR"):
        path = Path(os.environ["INVCAP_OUTPUT_DIR"]) / subdir
    else:
        path = default
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir() -> Path:
    return _folder("INVCAP_FIGURES_DIR", repo_root() / "figures", "figures")


def results_dir() -> Path:
    return _folder("INVCAP_RESULTS_DIR", repo_root() / "results", "results")


def cache_dir() -> Path:
    return _folder("INVCAP_CACHE_DIR", repo_root() / ".cache")


def _atomic_target(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual permissions
    return path, Path(tmp)


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path, tmp = _atomic_target(path)
    try:
        tmp.write_text(text)
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() != 1 else value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, tensors and numpy values as
    plain numbers and lists: what ``json.dumps(allow_nan=False)`` accepts (``jq`` and browsers
    reject the ``NaN`` token that Python writes by default)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return strict_json(_to_jsonable(value))


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Strict JSON (``strict_json``: NaN/Inf written as null), atomically."""
    return write_text_atomic(path, json.dumps(strict_json(data), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """A JSON file, or a FileNotFoundError that says which step writes it."""
    path = Path(path)
    if not path.is_file():
        hint = f"; {what} writes it" if what else ""
        raise FileNotFoundError(f"{path} not found{hint}")
    return json.loads(path.read_text())


def replace_marked_block(text: str, name: str, content: str) -> str:
    """Replace what lies between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in
    ``text`` by ``content`` (the markers stay). A ValueError when the markers are missing."""
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"no block {start} ... {end} in the text")
    return text[:i + len(start)] + "\n" + content.strip("\n") + "\n" + text[j:]


def marked_block(text: str, name: str) -> str | None:
    """The content between the ``results:NAME`` markers (None when absent)."""
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        return None
    return text[i + len(start):j].strip("\n")


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]],
                     columns: Sequence[str]) -> Path:
    path, tmp = _atomic_target(path)
    try:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writeheader()
            for row in rows:
                writer.writerow({c: row[c] for c in columns})
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file; use plain state dicts so that
    ``torch.load(path, weights_only=True)`` can read them back."""
    path, tmp = _atomic_target(path)
    try:
        torch.save(obj, tmp)
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_image_atomic(image, path: str | os.PathLike, format: str = "PNG") -> Path:
    """A PIL image written through a temporary file and an atomic rename."""
    path, tmp = _atomic_target(path)
    try:
        image.save(tmp, format=format)
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_figure(fig, name_or_path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG, atomically. A bare name goes to ``figures_dir()``.

    PNG metadata carries no date, so the same figure gives the same bytes on rerun."""
    path = Path(name_or_path)
    if not path.is_absolute() and path.parent == Path("."):
        path = figures_dir() / path
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    path, tmp = _atomic_target(path)
    try:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight",
                    metadata={"Software": None})
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

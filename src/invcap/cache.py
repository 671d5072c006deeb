"""One name for every cached artifact: ``cache_key(config, data, code)``.

A cached dataset, checkpoint, embedding table or trained network is valid only for the
configuration that produced it, the data it was computed from and the code that computed it.
``cache_key`` hashes all three, so a rerun reuses an artifact exactly when nothing that decides
its contents changed, and an edit to the training function makes the next run retrain:

- ``config``: a dataclass, a mapping or plain values (JSON-able after conversion; tuples become
  lists, paths strings). Put the device in ``config`` only when it changes the result.
- ``data``: strings that name the data (e.g. ``data_key`` of a dataset folder) and/or tensors,
  which are hashed by their exact bytes, shape and dtype (``tensor_digest``).
- ``code``: modules, classes or functions whose source decides the artifact. Their source is
  parsed and hashed without comments and docstrings, so re-wording a comment keeps caches while
  changing a statement invalidates them. Plain strings (a format version) are hashed as they are.

``cached_path(kind, name, key)`` is where such an artifact lives: ``cache_dir()/kind/name-key.pt``.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import math
import textwrap
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

__all__ = ["cache_key", "code_digest", "tensor_digest", "cached_path", "KEY_LENGTH"]

KEY_LENGTH = 16


def _canonical(value: Any) -> Any:
    """``value`` as plain JSON types, with a stable order and exact floats."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__dataclass__": type(value).__name__, **_canonical(dataclasses.asdict(value))}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=json.dumps)
    if isinstance(value, torch.Tensor):
        return {"__tensor__": tensor_digest(value)}
    if isinstance(value, float):
        return repr(value) if not math.isfinite(value) else value
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _canonical(value.item())
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        return _canonical(value.tolist())
    raise TypeError(f"cache_key cannot hash a {type(value).__name__} ({value!r:.80}); pass plain values, "
                    f"dataclasses, mappings, sequences or tensors")


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 over the exact bytes, shapes and dtypes of ``tensors`` (first 16 hex digits)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor_digest takes tensors, got {type(tensor).__name__}")
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:KEY_LENGTH]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=256)
def _source_digest(source: str) -> str:
    tree = _strip_docstrings(ast.parse(textwrap.dedent(source)))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()[:KEY_LENGTH]


def _one_code_digest(obj: Any) -> str:
    if isinstance(obj, str):
        return hashlib.sha256(obj.encode()).hexdigest()[:KEY_LENGTH]
    if isinstance(obj, (types.ModuleType, type, types.FunctionType, types.MethodType)) or callable(obj):
        target = getattr(obj, "__func__", obj)
        try:
            source = inspect.getsource(target)
        except (OSError, TypeError) as err:
            raise TypeError(f"cache_key cannot read the source of {obj!r}; pass a module, class or function "
                            f"defined in a .py file") from err
        return _source_digest(source)
    raise TypeError(f"code entries must be modules, classes, functions or strings, got {type(obj).__name__}")


def code_digest(code: Iterable[Any]) -> list[str]:
    """One digest per entry of ``code`` (see the module docstring)."""
    return [_one_code_digest(obj) for obj in code]


def cache_key(config: Any, data: Any = None, code: Sequence[Any] = (), *, length: int = KEY_LENGTH) -> str:
    """A hex key that changes whenever ``config``, ``data`` or the source of ``code`` changes."""
    if isinstance(code, (str, types.ModuleType)) or callable(code):
        code = [code]
    blob = {"config": _canonical(config), "data": _canonical(data), "code": code_digest(code)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:length]


def cached_path(kind: str, name: str, key: str, suffix: str = ".pt") -> Path:
    """``cache_dir()/kind/<name>-<key><suffix>``, with ``name`` made file-name safe."""
    from invcap.io import cache_dir

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{safe}-{key}{suffix}"

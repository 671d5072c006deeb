"""Progress bars that are live where a person watches and one line where output is stored.

``progress(iterable, total=None, desc="")`` behaves like tqdm. What it shows depends on
``INVCAP_PROGRESS``:

- ``live`` (default): ``tqdm.auto``, a widget in JupyterLab and a bar in a terminal.
- ``final``: nothing while the loop runs, then one line (``desc: n/total in 12 s, key=value``)
  on stderr when it ends. ``make paper`` and ``make test`` set it, so a stored notebook keeps one
  line per loop instead of a stream output per refresh.
- ``off``: nothing at all.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator

__all__ = ["progress", "progress_mode", "MODES"]

MODES = ("live", "final", "off")


def progress_mode() -> str:
    mode = os.environ.get("INVCAP_PROGRESS", "live").strip().lower() or "live"
    if mode not in MODES:
        raise ValueError(f"INVCAP_PROGRESS must be one of {MODES}, got {mode!r}")
    return mode


class _FinalLine:
    """The subset of tqdm's interface the package uses, printing one summary line at close."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str, quiet: bool) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.quiet = total, desc, unit, quiet
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:  # type: ignore[union-attr]
                yield item
                self.n += 1
        finally:
            self.close()

    def __enter__(self) -> "_FinalLine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix.update(ordered_dict or {})
        self.postfix.update(kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.quiet:
            return
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc or 'done'}: {count} {self.unit} in {time.perf_counter() - self.start:.0f} s{extra}",
              file=sys.stderr, flush=True)


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, **tqdm_kwargs: Any):
    """A tqdm-like bar over ``iterable`` (or a manual one with ``total`` and ``update``)."""
    mode = progress_mode()
    if disable or mode == "off":
        return _FinalLine(iterable, total, desc, unit, quiet=True)
    if mode == "final":
        return _FinalLine(iterable, total, desc, unit, quiet=False)
    from tqdm.auto import tqdm

    tqdm_kwargs.setdefault("mininterval", 0.5)
    return tqdm(iterable, total=total, desc=desc, unit=unit, **tqdm_kwargs)

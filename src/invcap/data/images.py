"""Image files of a captioned-image folder: checked once, decoded once, held as uint8.

- ``check_image_files(folder, names)``: which files are missing, unreadable or truncated (skipped)
  and which are greyscale, CMYK or a PNG behind a ``.jpg`` name (converted to RGB and kept). The
  verdicts are cached per folder, keyed by each file's size and modification time.
- ``decode_images(folder, names, size, workers)``: one (N, 3, S, S) uint8 tensor, decoded by worker
  processes into a preallocated tensor.
- ``UInt8Images(pixels)``: a float view that converts only the rows asked for, so a split of 29,000
  images never exists in float all at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

__all__ = ["check_image_files", "decode_image", "decode_images", "UInt8Images", "tally"]

# --- checking images up front ---------------------------------------------------------------------
# A check reads each file's header (and, for a JPEG, its last two bytes); the verdicts are cached per
# image folder, keyed by each file's size and modification time, so a folder of 31,783 photos is
# checked once and later loads (every split, every notebook) only stat the files.

_JPEG_END = b"\xff\xd9"  # EOI marker: a download cut short lacks it


def _check_image(path: Path, full: bool) -> tuple[str | None, str | None]:
    """``(why it is unusable or None, what the loader converts or None)``. Converted images are
    used: greyscale and CMYK JPEGs become RGB, and a PNG behind a ``.jpg`` name is read as a PNG."""
    from PIL import Image

    if not path.is_file():
        return "missing", None
    try:
        with Image.open(path) as image:
            fmt, mode = image.format, image.mode
            if full:
                image.load()
            else:
                image.verify()  # header and (for PNG) chunk checksums, without decoding
        if fmt == "JPEG" and not full:
            with open(path, "rb") as handle:
                handle.seek(-2, os.SEEK_END)
                complete = handle.read(2) == _JPEG_END
            if not complete:  # trailing bytes after EOI are legal but rare: decode to decide
                with Image.open(path) as image:
                    image.load()
    except Exception as err:  # PIL raises many types for broken files
        return f"unreadable: {type(err).__name__}: {err}", None
    notes = []
    if path.suffix.lower() in (".jpg", ".jpeg") and fmt != "JPEG":
        notes.append(f"{fmt} named {path.suffix}")
    if mode == "L":
        notes.append("greyscale")
    elif mode == "CMYK":
        notes.append("CMYK")
    elif mode not in ("RGB",):
        notes.append(f"mode {mode}")
    return None, ", ".join(notes) or None


def _check_table_path(folder: Path, mode: str) -> Path:
    from invcap.cache import cache_key, cached_path

    return cached_path("image_checks", folder.name, cache_key({"mode": mode}, str(folder.resolve()), [_check_image]),
                       ".json")


def check_image_files(folder: Path, filenames: Sequence[str], mode: str = "header", progress: bool = True,
                 cache: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """``(skipped, converted)``: file name -> why it is skipped (missing, unreadable, truncated) and
    file name -> what is converted (greyscale, CMYK, a PNG named .jpg), for ``filenames`` in ``folder``.
    ``mode``: ``"header"`` (fast; catches truncated JPEGs by their missing end marker) or ``"full"``
    (decodes every image)."""
    from invcap.io import write_json_atomic
    from invcap.progress import progress as bar

    table_path = _check_table_path(folder, mode) if cache else None
    table: dict[str, list] = {}
    if table_path is not None and table_path.is_file():
        try:
            table = json.loads(table_path.read_text())
        except (OSError, json.JSONDecodeError):  # a damaged cache is rebuilt
            table = {}
    skipped, converted, fresh = {}, {}, 0
    for name in bar(filenames, desc="checking images", unit="img", disable=not progress):
        path = folder / name
        try:
            stat = path.stat()
            stamp = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            stamp = [None, None]
        entry = table.get(name)
        if entry is None or entry[:2] != stamp:
            entry = stamp + list(_check_image(path, full=mode == "full"))
            table[name] = entry
            fresh += 1
        if entry[2] is not None:
            skipped[name] = entry[2]
        elif entry[3] is not None:
            converted[name] = entry[3]
    if table_path is not None and fresh:
        write_json_atomic(table_path, table)
    return skipped, converted


def tally(reasons: dict[str, str]) -> str:
    """'2 missing, 1 truncated' from file name -> reason."""
    counts: dict[str, int] = {}
    for reason in reasons.values():
        kind = ("truncated" if "truncated" in reason else reason.split(":")[0]).strip()
        for part in kind.split(", "):
            counts[part] = counts.get(part, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


# --- decoding into uint8, once, with workers ------------------------------------------------------

def decode_image(path: Path, image_size: int) -> torch.Tensor:
    """(3, S, S) uint8: RGB (greyscale/CMYK converted), shorter side resized to ``S`` (bilinear,
    antialiased), centre-cropped. JPEGs are decoded at a reduced DCT scale (``draft``) that still
    leaves at least 2 S pixels on the shorter side, which makes 500-px photos ~3x faster to read."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    with Image.open(path) as image:
        if image.format == "JPEG":
            w, h = image.size
            scale = min(w, h) / (2 * image_size)
            image.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))) if scale > 1 else image.size)
        rgb = image.convert("RGB")
    return TF.pil_to_tensor(TF.center_crop(TF.resize(rgb, image_size, antialias=True), image_size))


class _Decoded(Dataset):
    def __init__(self, folder: Path, filenames: list[str], image_size: int):
        self.folder, self.filenames, self.image_size = folder, filenames, image_size

    def __len__(self) -> int:
        return len(self.filenames)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.folder / self.filenames[index]
        try:
            return decode_image(path, self.image_size)
        except OSError as err:
            raise ValueError(f"cannot decode {path} ({err}); load with check_images='full' to skip "
                             f"unreadable images up front") from err


def decode_images(folder: Path, filenames: Sequence[str], image_size: int, workers: int = 0,
                  batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    """Every image as one (N, 3, S, S) uint8 tensor, decoded by ``workers`` processes (0: here)
    into a preallocated tensor, so memory holds the uint8 result and one batch per worker only."""
    from torch.utils.data import DataLoader

    from invcap.progress import progress as bar

    out = torch.empty(len(filenames), 3, image_size, image_size, dtype=torch.uint8)
    loader = DataLoader(_Decoded(Path(folder), list(filenames), image_size), batch_size=batch_size,
                        num_workers=workers, persistent_workers=False)
    start = 0
    with bar(total=len(filenames), desc="decoding images", unit="img", disable=not progress) as shown:
        for batch in loader:
            out[start:start + len(batch)] = batch
            start += len(batch)
            shown.update(len(batch))
    return out


class UInt8Images(torch.Tensor):
    """(N, 3, H, W) images stored as uint8 that behave as floats in [0, 1]: ``view[i]`` and
    ``view[a:b]`` convert only the rows asked for, so a split of 29,000 images costs its uint8 bytes
    (356 MB at 64 px) rather than four times that in float. It is a ``torch.Tensor`` (``isinstance``
    checks pass; ``shape``, ``len``, ``dim``, ``device`` answer without converting; ``dtype`` says
    float32, what every operation sees). Any other operation on the whole view (``torch.stack``,
    ``.double()``, a network call) converts the whole split for that one call: fine for val/test,
    avoid it on a training split. ``.to(device)`` moves the uint8 bytes and stays lazy."""

    @staticmethod
    def __new__(cls, pixels: torch.Tensor) -> "UInt8Images":
        if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.dim() != 4:
            got = f"{pixels.dtype} {tuple(pixels.shape)}" if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise ValueError(f"expected (N, C, H, W) uint8 pixels, got {got}")
        return torch.Tensor._make_subclass(cls, pixels.as_subclass(torch.Tensor) if isinstance(pixels, cls) else pixels)

    @property
    def pixels(self) -> torch.Tensor:
        """The stored uint8 tensor (no copy)."""
        with torch._C.DisableTorchFunctionSubclass():
            return self.as_subclass(torch.Tensor)

    def as_float(self) -> torch.Tensor:
        """The whole split in float (a copy of four times the uint8 size)."""
        return self.pixels.float().div_(255)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RAW:  # answered from the uint8 tensor, no conversion
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func is _DTYPE:
            return torch.float32
        if func is torch.Tensor.__getitem__:
            return args[0].pixels[args[1]].float().div_(255)
        if func in _MOVES and not any(isinstance(a, torch.dtype) for a in (*args, *kwargs.values())) \
                and not kwargs.get("dtype"):
            with torch._C.DisableTorchFunctionSubclass():
                moved = func(args[0].pixels, *args[1:], **kwargs)
            return UInt8Images(moved)
        convert = lambda v: v.as_float() if isinstance(v, UInt8Images) else (  # noqa: E731
            type(v)(convert(x) for x in v) if isinstance(v, (list, tuple)) else v)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*convert(tuple(args)), **{k: convert(v) for k, v in kwargs.items()})

    def __repr__(self, *args, **kwargs) -> str:
        return f"UInt8Images(shape={tuple(self.shape)}, device={self.device}, stored as uint8)"


_RAW = {torch.Tensor.dim, torch.Tensor.size, torch.Tensor.__len__, torch.Tensor.numel, torch.Tensor.nelement,
        torch.Tensor.shape.__get__, torch.Tensor.ndim.__get__, torch.Tensor.device.__get__,
        torch.Tensor.is_cuda.__get__, torch.Tensor.requires_grad.__get__, torch.Tensor.grad_fn.__get__,
        torch.Tensor.is_sparse.__get__, torch.Tensor.layout.__get__}
_DTYPE = torch.Tensor.dtype.__get__
_MOVES = {torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.contiguous}

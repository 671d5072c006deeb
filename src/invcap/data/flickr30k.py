"""Flickr30k in the three formats people have, behind one function.

- Karpathy split file ``dataset_flickr30k.json``: ``images[].filename``, ``.split``
  (train/val/test: 29,000 / 1,014 / 1,000), ``.sentences[].raw``. Carries splits.
- Kaggle (hsankesara/flickr-image-dataset) ``results.csv``: ``|``-separated, header
  ``image_name| comment_number| comment`` with leading spaces, and one known malformed row that
  lacks the separator after the comment number (``2199200615.jpg| 4   A dog runs ...``).
- The official / torchvision ``results_20130124.token``: ``1000092795.jpg#0<TAB>caption``.

``load_flickr30k(root)`` finds whichever is under ``root`` (the Karpathy file first, since only it
carries splits) and the image folder next to it, and returns a ``CaptionedImages`` dataset.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from invcap.data.images import UInt8Images, check_image_files, decode_image, decode_images, tally

__all__ = ["CaptionedImages", "UInt8Images", "load_flickr30k", "embedded_dataset", "read_karpathy_json",
           "read_kaggle_csv", "read_token_file", "find_annotations", "check_image_files", "decode_image",
           "decode_images", "plot_samples", "ANNOTATION_FILES"]

# In order of preference: the first one found under root is read.
ANNOTATION_FILES = ("dataset_flickr30k.json", "results.csv", "results_20130124.token")
IMAGE_FOLDERS = ("flickr30k_images/flickr30k_images", "flickr30k_images", "flickr30k-images", "images", "Images", ".")
WHERE_TO_GET = ("Get Flickr30k from https://www.kaggle.com/datasets/hsankesara/flickr-image-dataset "
                "(images + results.csv) or https://shannon.cs.illinois.edu/DenotationGraph/ "
                "(flickr30k-images + results_20130124.token); the Karpathy splits are "
                "dataset_flickr30k.json in https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip.")

Annotations = "OrderedDict[str, list[str]]"  # filename -> captions, in file order


def _group(pairs: list[tuple[str, int, str]]) -> "OrderedDict[str, list[str]]":
    """(filename, caption number, caption) rows -> filename -> captions ordered by number."""
    grouped: OrderedDict[str, list[tuple[int, str]]] = OrderedDict()
    for name, number, caption in pairs:
        grouped.setdefault(name, []).append((number, caption))
    return OrderedDict((name, [c for _, c in sorted(rows, key=lambda r: r[0])]) for name, rows in grouped.items())


def read_karpathy_json(path: str | os.PathLike) -> tuple["OrderedDict[str, list[str]]", dict[str, str]]:
    """Karpathy-style split file -> (filename -> captions, filename -> split)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        images = data["images"]
        captions = OrderedDict((im["filename"], [s["raw"].strip() for s in im["sentences"]]) for im in images)
        splits = {im["filename"]: im["split"] for im in images}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a Karpathy split file: expected JSON with images[].filename, "
                         f".split and .sentences[].raw ({type(err).__name__}: {err})") from err
    return captions, splits


_MALFORMED = re.compile(r"^\s*(\d+)\s+(.*)$")  # "4   A dog runs ..." (separator missing)


def read_kaggle_csv(path: str | os.PathLike) -> "OrderedDict[str, list[str]]":
    """Kaggle ``results.csv``. Parsed by hand rather than with pandas so that the malformed row
    and captions containing ``|`` are both handled, and a broken line names its number."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [h.strip() for h in lines[0].split("|")] if lines else []
    if header != ["image_name", "comment_number", "comment"]:
        raise ValueError(f"{path}: expected the Kaggle header 'image_name| comment_number| comment', "
                         f"got {lines[0][:80]!r}" if lines else f"{path} is empty")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("|", 2)
        if len(parts) == 3:
            name, number, caption = parts[0].strip(), parts[1].strip(), parts[2].strip()
        elif len(parts) == 2 and (m := _MALFORMED.match(parts[1])):
            name, number, caption = parts[0].strip(), m.group(1), m.group(2).strip()
        else:
            raise ValueError(f"{path}:{lineno}: cannot parse {line[:80]!r}; expected 'image| number| caption'")
        if not number.isdigit():
            raise ValueError(f"{path}:{lineno}: comment_number {number!r} is not an integer")
        rows.append((name, int(number), caption))
    return _group(rows)


def read_token_file(path: str | os.PathLike) -> "OrderedDict[str, list[str]]":
    """``results_20130124.token``: ``name.jpg#k<TAB>caption`` per line."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        name, hash_, number = key.strip().rpartition("#")
        if not sep or not hash_ or not number.isdigit():
            raise ValueError(f"{path}:{lineno}: cannot parse {line[:80]!r}; expected 'name.jpg#k<TAB>caption'")
        rows.append((name, int(number), caption.strip()))
    return _group(rows)


def find_annotations(root: str | os.PathLike) -> Path:
    """The annotation file to read: ``root`` itself if it is a file, else the first of
    ``ANNOTATION_FILES`` found in ``root`` or up to two folders below it."""
    root = Path(root).expanduser()
    if root.is_file():
        if root.name.endswith((".json", ".csv", ".token")):
            return root
        raise ValueError(f"{root} is not a Flickr30k annotation file; expected one of {ANNOTATION_FILES}")
    if not root.is_dir():
        raise FileNotFoundError(f"Flickr30k root {root} does not exist. Expected a folder holding one of "
                                f"{', '.join(ANNOTATION_FILES)} and the image folder. {WHERE_TO_GET}")
    for name in ANNOTATION_FILES:
        for pattern in (name, f"*/{name}", f"*/*/{name}"):
            found = sorted(root.glob(pattern))
            if found:
                return found[0]
    raise FileNotFoundError(f"no Flickr30k annotations under {root}: expected one of {', '.join(ANNOTATION_FILES)} "
                            f"(in the folder or up to two levels below). {WHERE_TO_GET}")


def _find_image_folder(root: Path, annotation: Path, filenames: Sequence[str]) -> Path:
    probe = [f for f in filenames[:5]]
    # root/, the annotation's folder, and (when root names the file itself) the folder above it
    bases = [root, annotation.parent] if root.is_dir() else [annotation.parent, annotation.parent.parent]
    candidates = []
    for base in bases:
        for sub in IMAGE_FOLDERS:
            folder = (base / sub).resolve()
            if folder not in candidates:
                candidates.append(folder)
    for folder in candidates:
        if folder.is_dir() and any((folder / f).is_file() for f in probe):
            return folder
    raise FileNotFoundError(f"found annotations {annotation} but none of their images (e.g. {probe[0]!r}) in any of "
                            f"{[str(c) for c in candidates]}. Put the images in flickr30k_images/ next to the "
                            f"annotation file. {WHERE_TO_GET}")


def default_transform(image_size: int) -> Callable:
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size),
                               transforms.ToTensor()])


class CaptionedImages(Dataset):
    """Items are ``(image, captions)``: a float (3, H, W) tensor in [0, 1] and a list of strings.

    Attributes: ``filenames``, ``captions`` (list of lists), ``splits`` (split name per item, or
    None when the annotations carry none), ``attributes`` (per-item attribute dicts for the
    embedded dataset, else None), ``mentions`` (embedded dataset: per item, per caption, the tuple of
    attribute names the caption states; else None), ``image_folder``, ``annotation_file``,
    ``skipped`` (file name -> reason, for images that were missing or unreadable), ``converted``
    (file name -> what was converted to RGB: greyscale, CMYK, a PNG behind a .jpg name).
    """

    def __init__(self, image_folder: Path, filenames: list[str], captions: list[list[str]],
                 splits: list[str] | None = None, attributes: list[dict] | None = None,
                 image_size: int = 32, transform: Callable | None = None,
                 annotation_file: Path | None = None, skipped: dict[str, str] | None = None,
                 mentions: list[list[tuple[str, ...]]] | None = None, converted: dict[str, str] | None = None):
        self.image_folder = Path(image_folder)
        self.filenames, self.captions, self.splits, self.attributes = filenames, captions, splits, attributes
        self.image_size = image_size
        self.transform = transform if transform is not None else default_transform(image_size)
        self.annotation_file = annotation_file
        self.skipped = dict(skipped or {})
        self.mentions = mentions
        self.converted = dict(converted or {})

    def __len__(self) -> int:
        return len(self.filenames)

    def load_image(self, index: int) -> torch.Tensor:
        from PIL import Image

        path = self.image_folder / self.filenames[index]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB"))
        except OSError as err:
            raise ValueError(f"cannot decode {path} ({err}); load with check_images='full' to skip "
                             f"unreadable images up front") from err

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        return self.load_image(index), self.captions[index]

    def stack_images(self, batch_size: int = 256, num_workers: int = 0, progress: bool = True) -> torch.Tensor:
        """Every image as one (N, 3, H, W) float tensor, loaded in batches through ``transform``."""
        from torch.utils.data import DataLoader

        from invcap.progress import progress as progress_bar

        loader = DataLoader(_ImagesOnly(self), batch_size=batch_size, num_workers=num_workers)
        batches = [b for b in progress_bar(loader, desc="loading images", unit="batch", disable=not progress, leave=False)]
        if not batches:
            return torch.empty(0, 3, self.image_size, self.image_size)
        return torch.cat(batches)

    def decode(self, workers: int = 0, progress: bool = True) -> torch.Tensor:
        """Every image as one (N, 3, S, S) uint8 tensor (``decode_images``: the default
        resize-and-crop, decoded by ``workers`` processes). A custom ``transform`` is not used."""
        return decode_images(self.image_folder, self.filenames, self.image_size, workers, progress=progress)

    @property
    def available_splits(self) -> list[str]:
        return sorted(set(self.splits)) if self.splits is not None else []

    def __repr__(self) -> str:
        split_counts = ({s: self.splits.count(s) for s in self.available_splits} if self.splits else None)
        return (f"CaptionedImages({len(self)} images, {sum(map(len, self.captions))} captions, "
                f"splits={split_counts}, image_size={self.image_size}, folder={self.image_folder})")


class _ImagesOnly(Dataset):
    def __init__(self, data: CaptionedImages):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data.load_image(index)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """One warning per distinct message and process: a notebook loads the same split many times."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=4)  # the caller of load_flickr30k


def _checked(folder: Path, filenames: list[str], mode: str, split: str | None, progress: bool
             ) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(usable file names, skipped, converted), with one warning each for skipped and converted files."""
    if mode == "none":
        return filenames, {}, {}
    skipped, converted = check_image_files(folder, filenames, mode, progress)
    where = f"{folder}" + (f" (split {split})" if split else "")
    if skipped:
        _warn_once(f"skipped {len(skipped)} of {len(filenames)} images under {where}: {tally(skipped)} "
                   f"(see .skipped); e.g. {next(iter(skipped.items()))}")
        filenames = [f for f in filenames if f not in skipped]
    if converted:
        _warn_once(f"converted {len(converted)} of {len(filenames)} images under {where} to RGB: "
                   f"{tally(converted)} (see .converted)")
    return filenames, skipped, converted


def load_flickr30k(root: str | os.PathLike, split: str | None = None, image_size: int = 32,
                   transform: Callable | None = None, check_images: str = "header",
                   progress: bool = True) -> CaptionedImages:
    """Flickr30k (or the embedded dataset, which is written in its layout) as a ``CaptionedImages``.

    ``root``: a folder holding one of ``dataset_flickr30k.json`` (Karpathy), ``results.csv``
    (Kaggle) or ``results_20130124.token`` (official) and the image folder (or the annotation
    file itself). ``split``: ``"train"``/``"val"``/``"test"`` (and ``"compositional_val"`` /
    ``"compositional_test"`` for the embedded set) when the annotations carry splits; None keeps
    every image.
    ``check_images``: ``"header"`` (default, fast; cached per folder) or ``"full"`` (decode every
    image) checks each image up front: missing, unreadable and truncated ones are skipped with one
    warning giving the count per reason (``.skipped``); greyscale and CMYK JPEGs and PNGs behind a
    ``.jpg`` name are converted to RGB and kept, with one warning (``.converted``). ``"none"`` skips
    the check. ``image_size``: images are resized (shorter side) and centre-cropped to this square.
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if check_images not in ("header", "full", "none"):
        raise ValueError(f"check_images must be 'header', 'full' or 'none', got {check_images!r}")
    root = Path(root).expanduser()
    annotation = find_annotations(root)
    if annotation.suffix == ".json":
        captions, split_of = read_karpathy_json(annotation)
    elif annotation.suffix == ".csv":
        captions, split_of = read_kaggle_csv(annotation), None
    else:
        captions, split_of = read_token_file(annotation), None
    if not captions:
        raise ValueError(f"{annotation} holds no captions")
    filenames = list(captions)
    if split is not None:
        if split_of is None:
            raise ValueError(f"split={split!r} was requested but {annotation.name} carries no splits; put the "
                             f"Karpathy file dataset_flickr30k.json under {root}, or pass split=None")
        present = sorted(set(split_of.values()))
        if split not in present:
            raise ValueError(f"split={split!r} is not in {annotation}; it has {present}")
        filenames = [f for f in filenames if split_of[f] == split]

    folder = _find_image_folder(root, annotation, filenames)
    filenames, skipped, converted = _checked(folder, filenames, check_images, split, progress)

    attributes = None
    attr_file = annotation.parent / "attributes.json"
    if attr_file.is_file():  # the embedded dataset's ground truth
        table = json.loads(attr_file.read_text())
        attributes = [table[f] for f in filenames]
    mentions = None
    mention_file = annotation.parent / "mentions.json"
    if mention_file.is_file():  # the embedded dataset: which attributes each caption states
        table = json.loads(mention_file.read_text())
        mentions = [[tuple(m) for m in table[f]] for f in filenames]
    return CaptionedImages(folder, filenames, [captions[f] for f in filenames],
                           splits=[split_of[f] for f in filenames] if split_of is not None else None,
                           attributes=attributes, image_size=image_size, transform=transform,
                           annotation_file=annotation, skipped=skipped, mentions=mentions,
                           converted=converted)


def embedded_dataset(split: str | None = None, image_size: int = 32, seed: int = 0,
                     root: str | os.PathLike | None = None, **kwargs) -> CaptionedImages:
    """The embedded default: generated on first use (cached under ``cache_dir()``), then read
    through ``load_flickr30k`` exactly like Flickr30k."""
    from invcap.data.embedded import make_embedded_dataset

    folder = make_embedded_dataset(root=root, seed=seed, image_size=image_size)
    return load_flickr30k(folder, split=split, image_size=image_size, progress=False, **kwargs)


def plot_samples(data: CaptionedImages, indices: Sequence[int], wrap: int = 70):
    """A figure with one row per image: the image, then its captions (and attributes if known)."""
    import textwrap

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(indices), 2, figsize=(10, 1.55 * len(indices)),
                             gridspec_kw={"width_ratios": [1, 6]}, squeeze=False)
    for row, index in enumerate(indices):
        image, captions = data[index]
        axes[row, 0].imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[row, 0].set_xticks([]), axes[row, 0].set_yticks([])
        axes[row, 0].set_ylabel(data.filenames[index], fontsize=7)
        lines = [textwrap.shorten(f"{k + 1}. {c}", wrap) for k, c in enumerate(captions)]
        if data.attributes is not None:
            lines.append("attributes: " + ", ".join(f"{k}={v}" for k, v in data.attributes[index].items()))
        axes[row, 1].text(0.0, 0.5, "\n".join(lines), va="center", fontsize=8, family="monospace")
        axes[row, 1].axis("off")
    fig.suptitle(f"{len(indices)} images with their captions ({data.image_size}x{data.image_size} pixels)")
    fig.tight_layout()
    return fig

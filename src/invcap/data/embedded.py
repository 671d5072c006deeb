"""The embedded default dataset: captioned images generated procedurally, so that `make paper`
needs no download, no GPU and no internet.

Each image shows one object on a dark background. The object has four attributes, each with a
few values (``ATTRIBUTES``): shape, colour, size and position (an image quadrant). Small random
jitter (position, size, colour, background brightness) makes images of the same attributes
differ, but never enough to make an attribute ambiguous: positions stay inside their quadrant
and sizes keep a gap between classes. Every image gets five captions, like Flickr30k's five
captions per image, in the training wording (``invcap.data.wording``: 48 sentence shapes, synonyms,
spelling, case and punctuation variants); about 30 % of them leave one or more attributes out, as
Flickr captions do, and which attributes each caption states is kept (``mentions.json``).

Splits: ``train`` / ``val`` / ``test`` draw from the same 144 attribute combinations; the
48 held-out combinations (one (shape, colour) pair per shape and per colour, at every size and
position) never occur there, so every single attribute value is seen in training but not these
pairings. Their images form ``compositional_val`` (to choose methods on) and ``compositional_test``
(to report), each covering all 48 combinations.

``make_embedded_dataset`` writes it in Flickr30k's own layout, so the Flickr30k loader is the
path the default run uses: ``flickr30k_images/*.png``, the Kaggle ``results.csv`` (header
``image_name| comment_number| comment``), a Karpathy-style ``dataset_flickr30k.json`` carrying
the splits, plus ``attributes.json`` (file name -> attributes) for attribute-level scoring and
``mentions.json`` (file name -> per caption, the attributes it states).

``evaluation_captions`` draws fresh captions for scoring: full or partial, in the training wording
or in the held-out one (``invcap.data.heldout_wording``, used only there).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "ATTRIBUTES", "HOLDOUT_PAIRS", "SPLIT_SIZES", "COMPOSITIONAL_SPLITS", "render", "render_batch", "describe",
    "all_combinations", "compositional_holdout", "split_combinations", "make_embedded_dataset", "dataset_key",
    "evaluation_captions",
]

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "cross"),
    "colour": ("red", "green", "blue", "yellow"),
    "size": ("small", "medium", "large"),
    "position": ("top left", "top right", "bottom left", "bottom right"),
}

# (shape, colour) pairs never shown in train/val/test: a Latin square, so every shape and every
# colour loses exactly one partner and all single values stay in training.
HOLDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("circle", "red"), ("square", "green"), ("triangle", "blue"), ("cross", "yellow"))

# Images per split in the default dataset: a few thousand train images, so later notebooks can
# train in a minute or two on 2 CPU cores.
SPLIT_SIZES: dict[str, int] = {"train": 3600, "val": 480, "test": 480,
                               "compositional_val": 480, "compositional_test": 480}
# The held-out combinations' images: one split to choose on, one to report (10 images of each of the
# 48 combinations in each, so confidence intervals can resample combinations).
COMPOSITIONAL_SPLITS = ("compositional_val", "compositional_test")
CAPTIONS_PER_IMAGE = 5

_RGB = {"red": (0.90, 0.15, 0.15), "green": (0.15, 0.75, 0.20),
        "blue": (0.20, 0.35, 0.95), "yellow": (0.95, 0.85, 0.15)}
# Fraction of the image side. Small objects are ~7 px wide at 32x32: at ~6 px (half-extent 0.09)
# the autoencoder reconstructed small triangles and crosses as round blobs.
_HALF_EXTENT = {"small": 0.11, "medium": 0.155, "large": 0.21}
_CENTRE = {"top left": (0.25, 0.25), "top right": (0.75, 0.25),
           "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75)}  # (x, y), y downwards
_BACKGROUND = 0.08
# Jitter bounds, chosen so that the largest object stays inside its quadrant (0.25 - 0.02 -
# 0.21 * 1.08 > 0) and the size classes never overlap (0.11 * 1.08 < 0.155 * 0.92 etc.).
_JITTER = {"centre": 0.02, "scale": 0.08, "colour": 0.05, "background": 0.04}
_SUPERSAMPLE = 4  # anti-aliasing: render at 4x and average


def _check_attributes(attributes: dict[str, str]) -> None:
    if not isinstance(attributes, dict):
        raise ValueError(f"attributes must be a dict like {{'shape': 'circle', ...}}, got {type(attributes).__name__}")
    missing = [k for k in ATTRIBUTES if k not in attributes]
    if missing:
        raise ValueError(f"attributes {attributes} lack {missing}; every image needs {list(ATTRIBUTES)}")
    for key, allowed in ATTRIBUTES.items():
        if attributes[key] not in allowed:
            raise ValueError(f"attribute {key}={attributes[key]!r} is not one of {allowed}")


def _mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Coverage of a shape of half-extent r centred at the origin (dy grows downwards)."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":  # slightly smaller than the circle's box so the areas are comparable
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if shape == "triangle":  # apex (0, -r), base corners (+-0.95 r, 0.8 r)
        return (dy <= 0.8 * r) & (dy >= -r + (1.8 / 0.95) * np.abs(dx))
    if shape == "cross":  # plus sign, arm thickness 0.7 r
        thin = 0.35 * r
        return ((np.abs(dx) <= r) & (np.abs(dy) <= thin)) | ((np.abs(dy) <= r) & (np.abs(dx) <= thin))
    raise ValueError(f"unknown shape {shape!r}; expected one of {ATTRIBUTES['shape']}")


def render(attributes: dict[str, str], image_size: int = 32,
           rng: np.random.Generator | None = None) -> torch.Tensor:
    """One image, float (3, H, W) in [0, 1]. With ``rng`` the object gets a little jitter
    (centre, size, colour, background brightness); without, it is drawn canonically."""
    _check_attributes(attributes)
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    j = np.zeros(6) if rng is None else rng.uniform(-1.0, 1.0, size=6)
    cx, cy = _CENTRE[attributes["position"]]
    cx, cy = cx + _JITTER["centre"] * j[0], cy + _JITTER["centre"] * j[1]
    r = _HALF_EXTENT[attributes["size"]] * (1.0 + _JITTER["scale"] * j[2])
    colour = np.clip(np.array(_RGB[attributes["colour"]]) + _JITTER["colour"] * j[3:6], 0.0, 1.0)
    background = _BACKGROUND + (0.0 if rng is None else _JITTER["background"] * rng.uniform(-1.0, 1.0))

    n = image_size * _SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / n  # sample centres in [0, 1]
    dx = coords[None, :] - cx
    dy = coords[:, None] - cy
    cover = _mask(attributes["shape"], dx, dy, r).astype(np.float32)
    cover = cover.reshape(image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE).mean(axis=(1, 3))
    image = background + cover[None] * (colour[:, None, None] - background)
    return torch.from_numpy(image.astype(np.float32)).clamp_(0.0, 1.0)


def render_batch(attribute_list: Sequence[dict[str, str]], image_size: int = 32, seed: int = 0) -> torch.Tensor:
    """Images for a list of attribute dicts, (N, 3, H, W); deterministic by ``seed``."""
    rng = np.random.default_rng(seed)
    if len(attribute_list) == 0:
        return torch.empty(0, 3, image_size, image_size)
    return torch.stack([render(a, image_size, rng) for a in attribute_list])


def describe(attributes: dict[str, str], rng: np.random.Generator | None = None, n: int = 5) -> list[str]:
    """``n`` captions (default 5) of ``attributes`` in the training wording, in different sentence
    shapes, each stating every attribute (``evaluation_captions`` gives partial and held-out ones)."""
    from invcap.data.wording import TRAINING

    _check_attributes(attributes)
    rng = np.random.default_rng(0) if rng is None else rng
    if not 1 <= n <= len(TRAINING.full_templates):
        raise ValueError(f"n must be between 1 and {len(TRAINING.full_templates)}, got {n}")
    out: list = []
    for _ in range(n):
        out.append(TRAINING.caption(attributes, rng, exclude=[c.template for c in out]))
    return [c.text for c in out]


def all_combinations() -> list[dict[str, str]]:
    """Every attribute combination, in a fixed order (4 x 4 x 3 x 4 = 192)."""
    keys = list(ATTRIBUTES)
    return [dict(zip(keys, values)) for values in itertools.product(*ATTRIBUTES.values())]


def compositional_holdout(pairs: Sequence[tuple[str, str]] = HOLDOUT_PAIRS) -> list[dict[str, str]]:
    """The combinations that never occur in train/val/test: every size and position of the
    held-out (shape, colour) pairs (48 of 192 with the default pairs)."""
    held = {tuple(p) for p in pairs}
    for shape, colour in held:
        _check_attributes({"shape": shape, "colour": colour, "size": "small", "position": "top left"})
    return [c for c in all_combinations() if (c["shape"], c["colour"]) in held]


def split_combinations(pairs: Sequence[tuple[str, str]] = HOLDOUT_PAIRS) -> dict[str, list[dict[str, str]]]:
    """``{"seen": combinations for train/val/test, "unseen": the held-out ones}`` (144 and 48)."""
    held = compositional_holdout(pairs)
    return {"seen": [c for c in all_combinations() if c not in held], "unseen": held}


def _plan(seed: int, split_sizes: dict[str, int]) -> list[tuple[str, dict[str, str]]]:
    """(split, attributes) for every image: each split cycles through its pool of combinations (so
    a split of at least the pool's size covers every combination, evenly), in a seeded order."""
    rng = np.random.default_rng(seed)
    combos = split_combinations()
    plan = []
    for split, size in split_sizes.items():
        pool = combos["unseen" if split in COMPOSITIONAL_SPLITS else "seen"]
        order = [pool[i % len(pool)] for i in range(size)]
        for i in rng.permutation(size):
            plan.append((split, order[i]))
    return plan


def _dataset_config(seed: int, image_size: int, sizes: dict[str, int]) -> dict[str, Any]:
    from invcap.data import wording

    config = {"seed": seed, "image_size": image_size, "split_sizes": sizes,
              "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
              "holdout_pairs": [list(p) for p in HOLDOUT_PAIRS], "geometry": [_HALF_EXTENT, _JITTER, _RGB],
              "partial_rate": wording.PARTIAL_RATE, "captions_per_image": CAPTIONS_PER_IMAGE}
    return json.loads(json.dumps(config))  # tuples -> lists, as the marker file will read back


def dataset_key(seed: int = 0, image_size: int = 32, split_sizes: dict[str, int] | None = None) -> str:
    """The dataset's ``cache_key``: its configuration and the code that draws it (the renderer, the
    split plan, the writer and the whole training wording module)."""
    from invcap.cache import cache_key
    from invcap.data import wording

    sizes = dict(SPLIT_SIZES if split_sizes is None else split_sizes)
    return cache_key(_dataset_config(seed, image_size, sizes),
                     code=[_mask, render, _plan, _write_dataset, wording, "embedded-format-3"])


def _check_sizes(seed: int, split_sizes: dict[str, int] | None) -> dict[str, int]:
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    sizes = dict(SPLIT_SIZES if split_sizes is None else split_sizes)
    unknown = set(sizes) - set(SPLIT_SIZES)
    if unknown or any((not isinstance(v, int)) or v < 0 for v in sizes.values()):
        hint = " (the single 'compositional' split is now compositional_val + compositional_test)" \
            if "compositional" in sizes else ""
        raise ValueError(f"split_sizes must map splits among {list(SPLIT_SIZES)} to non-negative ints, "
                         f"got {sizes}{hint}")
    return sizes


def make_embedded_dataset(root: str | os.PathLike | None = None, seed: int = 0, image_size: int = 32,
                          split_sizes: dict[str, int] | None = None, overwrite: bool = False) -> Path:
    """Generate the dataset in Flickr30k's layout and return its folder.

    The default folder is ``cache_dir()/embedded/<dataset_key>``; when it already holds a
    complete dataset of the same configuration it is reused. Written to a temporary folder
    first and renamed, so an interrupted run never leaves half a dataset behind.
    """
    from invcap.io import cache_dir

    sizes = _check_sizes(seed, split_sizes)
    key = dataset_key(seed, image_size, sizes)
    config = {**_dataset_config(seed, image_size, sizes), "key": key}
    root = Path(root) if root is not None else cache_dir() / "embedded" / key
    marker = root / "config.json"
    if marker.is_file() and not overwrite:
        if json.loads(marker.read_text()) == config:
            return root
        raise ValueError(f"{root} holds an embedded dataset with a different configuration or generator "
                         f"code; pass another root or overwrite=True")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _write_dataset(tmp, seed, image_size, sizes)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))  # written last: marks completeness
        if root.exists():  # overwrite=True or an incomplete folder from a crash
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished the same dataset first
            if not marker.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_dataset(folder: Path, seed: int, image_size: int, sizes: dict[str, int]) -> None:
    """Images, ``results.csv``, ``dataset_flickr30k.json``, ``attributes.json`` (file name ->
    attributes) and ``mentions.json`` (file name -> per caption, the attributes it states)."""
    from PIL import Image  # torchvision's dependency

    from invcap.data.wording import PARTIAL_RATE, TRAINING

    plan = _plan(seed, sizes)
    rng = np.random.default_rng([seed, 1])  # image jitter and caption wording
    image_dir = folder / "flickr30k_images"
    image_dir.mkdir()
    csv_lines = ["image_name| comment_number| comment"]
    karpathy, attributes_by_file, mentions_by_file = [], {}, {}
    k = CAPTIONS_PER_IMAGE
    for index, (split, attrs) in enumerate(plan):
        name = f"{index:06d}.png"
        image = render(attrs, image_size, rng)
        pixels = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        Image.fromarray(pixels).save(image_dir / name, compress_level=1)  # fast: the set is rebuilt in seconds
        captions = TRAINING.captions(attrs, rng, n=k, partial_rate=PARTIAL_RATE)
        texts = [c.text for c in captions]
        csv_lines += [f"{name}| {j}| {c}" for j, c in enumerate(texts)]
        karpathy.append({"filename": name, "imgid": index, "split": split,
                         "sentids": list(range(k * index, k * index + k)),
                         "sentences": [{"raw": c, "tokens": c.lower().rstrip(".!").split(),
                                        "imgid": index, "sentid": k * index + j} for j, c in enumerate(texts)]})
        attributes_by_file[name] = attrs
        mentions_by_file[name] = [list(c.mentions) for c in captions]
    (folder / "results.csv").write_text("\n".join(csv_lines) + "\n")
    (folder / "dataset_flickr30k.json").write_text(json.dumps({"images": karpathy, "dataset": "flickr30k"}))
    (folder / "attributes.json").write_text(json.dumps(attributes_by_file, indent=0))
    (folder / "mentions.json").write_text(json.dumps(mentions_by_file))


_WORDINGS = ("training", "heldout")


def evaluation_captions(attributes: Sequence[dict[str, str]], n: int = 5, wording: str = "training",
                        partial: bool = False, omit: Sequence[str] | None = None, seed: int = 0) -> list[list]:
    """Fresh captions for scoring generation: per image of ``attributes``, ``n`` ``Caption`` records
    (``.text``, ``.mentions``, ``.omitted``, ``.template``) in different sentence shapes where possible.

    ``wording``: ``"training"`` (the dataset's own wording) or ``"heldout"`` (the test-only wording of
    ``invcap.data.heldout_wording``: no shared sentence shape or phrase). ``partial=False``: every
    caption states every attribute. ``partial=True``: every caption leaves attributes out: exactly
    ``omit`` (e.g. ``("position",)``) when given, else a set drawn per caption as the dataset's partial
    captions are. Deterministic: image i's captions depend only on (seed, wording, partial, omit, i),
    through a random stream that the dataset's own captions never use.
    """
    if wording not in _WORDINGS:
        raise ValueError(f"wording must be one of {_WORDINGS}, got {wording!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if omit is not None and not partial:
        raise ValueError("omit= needs partial=True (a full caption omits nothing)")
    if omit is not None and (not omit or set(omit) - set(ATTRIBUTES) or len(set(omit)) >= len(ATTRIBUTES)):
        raise ValueError(f"omit must be a non-empty proper subset of {list(ATTRIBUTES)}, got {omit!r}")
    if wording == "heldout":
        from invcap.data.heldout_wording import HELDOUT as chosen
    else:
        from invcap.data.wording import TRAINING as chosen
    omit_code = [1 + list(ATTRIBUTES).index(a) for a in sorted(set(omit), key=list(ATTRIBUTES).index)] if omit else [0]
    out = []
    for i, attrs in enumerate(attributes):
        _check_attributes(dict(attrs))
        rng = np.random.default_rng([seed, 7, _WORDINGS.index(wording), int(partial), *omit_code, i])
        captions: list = []
        for _ in range(n):
            drop = (tuple(omit) if omit is not None else chosen.draw_omission(rng)) if partial else ()
            captions.append(chosen.caption(attrs, rng, drop, exclude=[c.template for c in captions]))
        out.append(captions)
    return out

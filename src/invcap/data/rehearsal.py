"""A Flickr30k-shaped rehearsal set: the full-size path can be tried without the real data.

    python -m invcap.data.rehearsal OUT [--images 31783] [--seed 0] [--workers W]

writes, under ``OUT``, what the Kaggle download plus the Karpathy split file look like:

- ``flickr30k_images/flickr30k_images/<id>.jpg``: ``--images`` JPEGs at Flickr30k's sizes (longest
  side 500 px; 4:3, 3:2, 16:9, square and the portrait forms, in roughly Flickr's proportions),
  numeric Flickr-style names, ``2199200615.jpg`` among them.
- ``flickr30k_images/results.csv``: five captions per image (31,783 x 5 = 158,915 at full size),
  header ``image_name| comment_number| comment`` with its leading spaces, tokenised captions
  (``... grass .``), and the known malformed row ``2199200615.jpg| 4   <caption>`` (no separator).
- ``dataset_flickr30k.json``: Karpathy's format (``images[].filename/.split/.sentences[].raw/.tokens``)
  with 29,000 / 1,014 / 1,000 train / val / test images at full size, scaled proportionally for
  fewer images. Like the real file it lists only those 31,014 of the 31,783 images; the other 769
  are on disk and in ``results.csv`` only.
- ``rehearsal.json``: the configuration, the counts, the planted faults and the generation time.
  It is written last and marks a complete set: a second run with the same configuration returns at
  once, and a killed run resumes (each image is written atomically and is a pure function of
  ``(seed, index)``, so which worker drew it never matters).

Scenes: one to three objects (balls, boxes, triangles, stars, rings, crosses, kites in ten colours
and two sizes) placed side by side or stacked, so that they stand in spatial relations, on a
textured background (grass, sand, water, snow, brick, wood, street, sky). Captions are about 12
words, like Flickr30k's, and name some of what is in the picture, never all of it: an object's
size or colour, the second object, the relation or the place may be left out.

Faults real downloads have, planted at deterministic places: a few greyscale and CMYK JPEGs, one
PNG saved under a ``.jpg`` name, one truncated JPEG, and one image listed in both annotation files
but missing on disk.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["RehearsalConfig", "make_rehearsal", "scene", "captions_for", "split_sizes", "fault_plan",
           "FULL_SIZE", "KARPATHY_SPLITS", "KNOWN_MALFORMED", "IMAGE_DIR"]

FULL_SIZE = 31783
KARPATHY_SPLITS = {"train": 29000, "val": 1014, "test": 1000}  # of the full set; the rest is unlisted
KNOWN_MALFORMED = "2199200615.jpg"  # Kaggle's results.csv lacks the separator in its 5th caption row
IMAGE_DIR = "flickr30k_images/flickr30k_images"
VERSION = 1  # bump when the drawing or the captions change: a complete set of another version is redone

# (width, height, share): Flickr30k's longest side is 500 px; landscape 4:3 and 3:2 dominate.
SIZES = ((500, 375, 0.34), (500, 333, 0.24), (500, 281, 0.04), (500, 500, 0.05),
         (375, 500, 0.16), (333, 500, 0.15), (400, 500, 0.02))
COLOURS = {"red": (200, 35, 35), "blue": (35, 70, 200), "green": (40, 150, 50), "yellow": (235, 205, 40),
           "white": (240, 240, 235), "black": (25, 25, 28), "orange": (240, 130, 25), "purple": (120, 50, 160),
           "pink": (240, 140, 180), "brown": (120, 75, 35)}
KINDS = ("ball", "box", "triangle", "star", "ring", "cross", "kite")
PLACES = {  # background -> (base RGB, phrases for a caption)
    "grass": ((70, 130, 50), ("on the grass", "in a grassy field", "on a green lawn")),
    "sand": ((205, 185, 140), ("on the sand", "on a sandy beach")),
    "water": ((50, 100, 160), ("in the water", "on the surface of a lake")),
    "snow": ((225, 230, 238), ("in the snow", "on a snowy hill")),
    "brick": ((150, 70, 50), ("against a brick wall", "in front of a red brick wall")),
    "wood": ((140, 95, 55), ("on a wooden floor", "on a wooden table")),
    "street": ((105, 105, 110), ("on the street", "on the pavement")),
    "sky": ((110, 160, 225), ("against the blue sky", "high up in the sky")),
}
FILLERS = ("in the bright sunlight", "on a sunny day", "in the late afternoon", "near the edge of the picture",
           "while the light fades", "in the middle of the frame")
COUNTS = {1: "One", 2: "Two", 3: "Three"}


@dataclass(frozen=True)
class RehearsalConfig:
    images: int = FULL_SIZE
    seed: int = 0
    quality: int = 90  # JPEG quality

    def __post_init__(self) -> None:
        if not isinstance(self.images, int) or self.images < 20:
            raise ValueError(f"images must be an int >= 20 (room for the planted faults), got {self.images!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")


# --- the plan: names, splits, faults -------------------------------------------------------------

def split_sizes(n: int) -> dict[str, int]:
    """Karpathy's 29,000 / 1,014 / 1,000 scaled to ``n`` images (at least 1 each)."""
    return {s: max(1, round(n * k / FULL_SIZE)) for s, k in KARPATHY_SPLITS.items()}


def _names(config: RehearsalConfig) -> list[str]:
    """Flickr-style numeric file names (7 to 10 digits), unique, with ``KNOWN_MALFORMED`` first."""
    rng = np.random.default_rng([config.seed, 0])
    numbers = {2199200615}
    while len(numbers) < config.images:
        digits = rng.integers(7, 11, size=config.images)
        numbers.update(int(rng.integers(10 ** (d - 1), 10 ** d)) for d in digits[: config.images - len(numbers)])
    numbers.discard(2199200615)
    return [KNOWN_MALFORMED] + [f"{k}.jpg" for k in sorted(numbers)[: config.images - 1]]


def fault_plan(config: RehearsalConfig) -> dict[str, list[int]]:
    """Image indices of each planted fault: among the images the Karpathy file lists (so a loader
    reading it meets every fault), never index 0 (``KNOWN_MALFORMED``), never two on one image."""
    counts = {"greyscale": max(2, round(config.images / 5000)), "cmyk": max(1, round(config.images / 8000)),
              "png_named_jpg": 1, "truncated": 1, "missing": 1}
    listed = np.array([i for i, split in enumerate(_splits(config)) if split is not None and i > 0])
    rng = np.random.default_rng([config.seed, 1])
    picked = rng.permutation(listed)[: sum(counts.values())].tolist()
    plan, start = {}, 0
    for fault, count in counts.items():
        plan[fault] = sorted(picked[start:start + count])
        start += count
    return plan


def _splits(config: RehearsalConfig) -> list[str | None]:
    """Split of each image index; None for the images that the Karpathy file does not list."""
    sizes = split_sizes(config.images)
    order = np.random.default_rng([config.seed, 2]).permutation(config.images)
    out: list[str | None] = [None] * config.images
    start = 0
    for split, size in sizes.items():
        for i in order[start:start + size]:
            out[int(i)] = split
        start += size
    return out


# --- scenes and captions ------------------------------------------------------------------------

def scene(config: RehearsalConfig, index: int) -> dict[str, Any]:
    """The scene of image ``index``: size, background and 1-3 objects (kind, colour, size, centre,
    radius), plus the pairwise relations, as plain values (a pure function of seed and index)."""
    rng = np.random.default_rng([config.seed, 3, index])
    w, h, _ = SIZES[rng.choice(len(SIZES), p=np.array([s[2] for s in SIZES]) / sum(s[2] for s in SIZES))]
    n = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    layout = "row" if rng.random() < 0.6 else "column"
    slots = (np.arange(n) + 0.5) / n
    rng.shuffle(slots)
    objects = []
    for k in range(n):
        size = "large" if rng.random() < 0.5 else "small"
        radius = min(w, h) * ((0.17 if size == "large" else 0.09) / max(1, n - 1) ** 0.3) * rng.uniform(0.9, 1.1)
        along = slots[k] + rng.uniform(-0.08, 0.08) / n
        across = rng.uniform(0.35, 0.65)
        cx, cy = (along * w, across * h) if layout == "row" else (across * w, along * h)
        objects.append({"kind": str(rng.choice(KINDS)), "colour": str(rng.choice(list(COLOURS))), "size": size,
                        "centre": (float(cx), float(cy)), "radius": float(radius),
                        "angle": float(rng.uniform(0, 360))})
    return {"width": int(w), "height": int(h), "background": str(rng.choice(list(PLACES))), "objects": objects,
            "texture_seed": int(rng.integers(2**31))}


def relation(a: dict, b: dict) -> str:
    """Where object ``a`` is relative to ``b``, from their centres (image y runs downwards)."""
    dx, dy = a["centre"][0] - b["centre"][0], a["centre"][1] - b["centre"][1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _phrase(obj: dict, rng: np.random.Generator, article: str = "a") -> str:
    words = []
    if rng.random() < 0.45:
        words.append(obj["size"])
    if rng.random() < 0.8:
        words.append(obj["colour"])
    words.append(obj["kind"])
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return f"{article} {' '.join(words)}"


def _caption(sc: dict, rng: np.random.Generator) -> str:
    """One caption (tokenised, final ' .'): names a random part of the scene."""
    objs = list(sc["objects"])
    rng.shuffle(objs)
    place = str(rng.choice(PLACES[sc["background"]][1]))
    filler = f" {rng.choice(FILLERS)}" if rng.random() < 0.35 else ""
    verb = str(rng.choice(["lies", "sits", "rests", "stands", "can be seen"]))
    one = _phrase(objs[0], rng)
    forms = ["single", "single_place", "close", "count", "someone"]
    if len(objs) >= 2:
        forms += ["relation", "relation", "pair", "there_is"]
    if len(objs) == 3:
        forms += ["three"]
    form = str(rng.choice(forms))
    if form == "single":
        text = f"{one} {verb} {place}{filler}"
    elif form == "single_place":
        text = f"{place.capitalize()} there is {one} waiting{filler}"
    elif form == "close":
        text = f"a close-up of {one} with the {sc['background']} behind it"
    elif form == "count":
        colour = objs[0]["colour"] if rng.random() < 0.7 else objs[-1]["colour"]
        things = "shape" if len(objs) == 1 else "shapes"
        tail = f", one of them {colour}" if len(objs) > 1 else f", painted {colour}"
        text = f"{COUNTS[len(objs)]} {things} {'lies' if len(objs) == 1 else 'lie'} {place}{tail}"
    elif form == "someone":
        text = f"someone has left {one} {place}{filler}"
    elif form == "relation":
        text = f"{one} {verb} {relation(objs[0], objs[1])} {_phrase(objs[1], rng)}" + (f" {place}" if rng.random() < 0.5 else "")
    elif form == "pair":
        text = f"{one} and {_phrase(objs[1], rng)} {rng.choice(['lie side by side', 'sit together', 'are shown'])} {place}"
    elif form == "there_is":
        text = f"there is {one} {relation(objs[0], objs[1])} {_phrase(objs[1], rng)}{filler}"
    else:  # three
        text = f"{one} , {_phrase(objs[1], rng)} and {_phrase(objs[2], rng)} are arranged {place}"
    text = text.replace(",", " ,").replace("  ", " ")
    return text[0].upper() + text[1:] + " ."


def captions_for(config: RehearsalConfig, index: int, sc: dict | None = None) -> list[str]:
    """The five tokenised captions of image ``index`` (Kaggle form: words, then ' .')."""
    sc = scene(config, index) if sc is None else sc
    rng = np.random.default_rng([config.seed, 4, index])
    return [_caption(sc, rng) for _ in range(5)]


def _raw(caption: str) -> str:
    """Karpathy's ``raw`` form: the final full stop attached, no space before commas."""
    return caption.replace(" ,", ",").removesuffix(" .") + "."


def _tokens(caption: str) -> list[str]:
    return [t for t in caption.lower().split() if t not in {".", ","}]


# --- drawing ------------------------------------------------------------------------------------

TILE = 720  # side of each background's texture tile; every image crops it at a random offset


@lru_cache(maxsize=None)
def _tile(kind: str) -> np.ndarray:
    """(TILE, TILE, 3) uint8 texture of one background: base colour, pattern and grain, drawn once
    per process (a fixed seed per kind) so that an image costs a crop, not a texture synthesis."""
    rng = np.random.default_rng(list(PLACES).index(kind))
    base = np.array(PLACES[kind][0], np.float32)
    y, x = np.mgrid[0:TILE, 0:TILE].astype(np.float32)
    if kind == "brick":
        row = (y // 22).astype(int)
        mortar = ((y % 22) < 3) | (((x + 30 * (row % 2)) % 60) < 3)
        pattern = np.where(mortar, 60.0, 0.0)
    elif kind == "wood":
        pattern = 18 * np.sin(y / 6 + 3 * np.sin(x / 70))
    elif kind == "water":
        pattern = 14 * np.sin(y / 5 + 2 * np.sin(x / 40))
    elif kind == "grass":
        pattern = 20 * np.sin(x * 1.3 + 4 * np.sin(y / 9))
    elif kind == "sky":
        pattern = 50 * (y / TILE) - 25
    elif kind == "street":
        pattern = np.where(np.abs(y % 360 - 300) < 4, 110.0, 0.0) * ((x // 40) % 2)
    else:
        pattern = np.zeros_like(x)
    grain = rng.integers(-12, 13, size=(TILE, TILE, 1)).astype(np.float32)
    return np.clip(base + pattern[..., None] + grain, 0, 255).astype(np.uint8)


def _texture(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8 background: a random crop of the kind's tile (maybe mirrored) under blotchy
    low-frequency shading, so no two images share a background."""
    from PIL import Image

    x0, y0 = int(rng.integers(0, TILE - w + 1)), int(rng.integers(0, TILE - h + 1))
    crop = _tile(kind)[y0:y0 + h, x0:x0 + w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    coarse = rng.integers(0, 256, size=(h // 40 + 2, w // 40 + 2), dtype=np.uint8)
    blotch = np.asarray(Image.fromarray(coarse, mode="L").resize((w, h), Image.BICUBIC), dtype=np.int16)
    shaded = crop.astype(np.int16) + ((blotch - 128) >> 2)[..., None]
    return np.clip(shaded, 0, 255).astype(np.uint8)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "box":
        pts = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        pts = [(0.8 * a, 0.8 * b) for a, b in pts]
    elif kind == "triangle":
        pts = [(np.cos(t), np.sin(t)) for t in np.radians([90, 210, 330])]
    elif kind == "kite":
        pts = [(0, 1), (0.6, 0), (0, -1), (-0.6, 0)]
    elif kind == "star":
        pts = [((1 if k % 2 == 0 else 0.45) * np.cos(t), (1 if k % 2 == 0 else 0.45) * np.sin(t))
               for k, t in enumerate(np.radians(np.arange(10) * 36 + 90))]
    else:  # cross
        a, b = 1.0, 0.33
        pts = [(b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b), (-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b)]
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    return [(cx + r * (c * px - s * py), cy - r * (s * px + c * py)) for px, py in pts]


def render(sc: dict[str, Any]):
    """The scene as an RGB ``PIL.Image`` (objects cast a soft shadow, balls get a highlight)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(sc["texture_seed"])
    image = Image.fromarray(_texture(sc["background"], sc["width"], sc["height"], rng))
    draw = ImageDraw.Draw(image, "RGBA")
    for obj in sc["objects"]:
        (cx, cy), r = obj["centre"], obj["radius"]
        colour = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[obj["colour"]])
        for dx, fill in ((0.12 * r, (0, 0, 0, 70)), (0.0, colour + (255,))):  # shadow, then the object
            x, y = cx + dx, cy + dx
            if obj["kind"] == "ball":
                draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
            elif obj["kind"] == "ring":
                draw.ellipse([x - r, y - r, x + r, y + r], outline=fill, width=max(2, int(r * 0.3)))
            else:
                draw.polygon(_polygon(obj["kind"], x, y, r, obj["angle"]), fill=fill)
        if obj["kind"] == "ball":
            draw.ellipse([cx - 0.5 * r, cy - 0.6 * r, cx - 0.1 * r, cy - 0.2 * r], fill=(255, 255, 255, 90))
    return image


# --- writing ------------------------------------------------------------------------------------

def _encode(image, fault: str | None, quality: int) -> bytes | None:
    """The file's bytes, with the planted fault applied (None: the file is missing on disk)."""
    buffer = io.BytesIO()
    if fault == "missing":
        return None
    if fault == "png_named_jpg":
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if fault == "greyscale":
        image = image.convert("L")
    elif fault == "cmyk":
        image = image.convert("CMYK")
    image.save(buffer, format="JPEG", quality=quality)
    data = buffer.getvalue()
    return data[: int(len(data) * 0.6)] if fault == "truncated" else data


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename (no half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _draw_chunk(args: tuple[RehearsalConfig, str, list[tuple[int, str, str | None]]]) -> tuple[int, dict[int, list[str]]]:
    """Worker: draw and write the images of one chunk that are not on disk yet, and caption every image
    of the chunk; returns (images written, index -> captions)."""
    config, folder, items = args
    written, captions = 0, {}
    for index, name, fault in items:
        sc = scene(config, index)
        captions[index] = captions_for(config, index, sc)
        path = Path(folder) / name
        if path.exists() or fault == "missing":
            continue
        _write_atomic(path, _encode(render(sc), fault, config.quality))
        written += 1
    return written, captions


def _chunks(items: Sequence, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _annotations(config: RehearsalConfig, names: list[str], splits: list[str | None], caps: list[list[str]]
                 ) -> tuple[str, dict]:
    """(results.csv text, Karpathy JSON object)."""
    csv_lines = ["image_name| comment_number| comment"]
    images, sentid = [], 0
    for i in sorted(range(config.images), key=lambda i: names[i]):  # Kaggle's file is sorted by name
        for k, c in enumerate(caps[i]):
            csv_lines.append(f"{names[i]}| {k}   {c}" if (names[i], k) == (KNOWN_MALFORMED, 4)
                             else f"{names[i]}| {k}| {c}")
    for i in range(config.images):  # Karpathy's order is not sorted: the plan's order
        if splits[i] is None:
            continue
        imgid = len(images)
        sentences = [{"tokens": _tokens(c), "raw": _raw(c), "imgid": imgid, "sentid": sentid + k}
                     for k, c in enumerate(caps[i])]
        images.append({"sentids": list(range(sentid, sentid + 5)), "imgid": imgid, "sentences": sentences,
                       "split": splits[i], "filename": names[i]})
        sentid += 5
    return "\n".join(csv_lines) + "\n", {"images": images, "dataset": "flickr30k"}


def _draw_all(config: RehearsalConfig, folder: Path, items: list, workers: int, progress: bool
              ) -> tuple[int, dict[int, list[str]]]:
    """Draw every missing image with ``workers`` processes; returns (images written, index -> captions)."""
    from invcap.progress import progress as bar

    jobs = [(config, str(folder), chunk) for chunk in _chunks(items, 64)]
    written, captions = 0, {}
    with bar(total=config.images, desc="rehearsal images", unit="img", disable=not progress) as shown:
        if workers == 1:
            results: Iterator = map(_draw_chunk, jobs)
        else:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers)  # spawn: safe whatever threads the parent runs
            results = pool.imap(_draw_chunk, jobs)
        try:
            for job, (count, chunk_captions) in zip(jobs, results):
                written += count
                captions.update(chunk_captions)
                shown.update(len(job[2]))
        finally:
            if workers > 1:
                pool.close()
                pool.join()
    return written, captions


def make_rehearsal(out: str | os.PathLike, config: RehearsalConfig = RehearsalConfig(), workers: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Write the rehearsal set under ``out`` (see the module docstring); returns its manifest.

    A folder whose ``rehearsal.json`` records the same configuration is reused as it is; a folder
    holding part of a set of this configuration is completed; a folder holding anything else is an
    error (it is never overwritten)."""
    out = Path(out).expanduser()
    manifest_path = out / "rehearsal.json"
    wanted = {**asdict(config), "version": VERSION}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("config") == wanted:
            return {**manifest, "reused": True}
        raise ValueError(f"{out} holds a rehearsal set of another configuration ({manifest.get('config')}); "
                         f"choose another folder or delete it")
    started = out / ".rehearsal-config.json"  # written first: a folder holding part of this very set resumes
    if started.is_file():
        if json.loads(started.read_text()) != wanted:
            raise ValueError(f"{out} holds part of a rehearsal set of another configuration; delete it first")
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no rehearsal set; choose an empty or new folder")
    folder = out / IMAGE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(started, json.dumps(wanted).encode())

    start = time.perf_counter()
    names, splits, faults = _names(config), _splits(config), fault_plan(config)
    fault_of = {i: f for f, indices in faults.items() for i in indices}
    items = [(i, names[i], fault_of.get(i)) for i in range(config.images)]
    workers = max(1, min(workers or os.cpu_count() or 1, 32))
    written, captions = _draw_all(config, folder, items, workers, progress)
    draw_seconds = time.perf_counter() - start
    caps = [captions[i] for i in range(config.images)]
    csv_text, karpathy = _annotations(config, names, splits, caps)
    _write_atomic(out / "flickr30k_images" / "results.csv", csv_text.encode("utf-8"))
    _write_atomic(out / "dataset_flickr30k.json", json.dumps(karpathy).encode("utf-8"))
    words = [len(_tokens(c)) for cs in caps for c in cs]
    manifest = {
        "config": wanted,
        "counts": {"images_listed": config.images, "images_on_disk": config.images - len(faults["missing"]),
                   "captions": 5 * config.images, "karpathy_images": len(karpathy["images"]),
                   "splits": split_sizes(config.images), "unlisted_in_karpathy": config.images - len(karpathy["images"])},
        "faults": {f: [names[i] for i in indices] for f, indices in faults.items()},
        "caption_words": {"mean": float(np.mean(words)), "min": int(min(words)), "max": int(max(words))},
        "seconds": {"images": round(draw_seconds, 1), "total": round(time.perf_counter() - start, 1)},
        "workers": workers, "images_written_this_run": written,
        "peak_rss_mb": round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                 resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024),  # KiB on Linux
    }
    _write_atomic(manifest_path, (json.dumps(manifest, indent=1) + "\n").encode())  # last: marks the set complete
    return {**manifest, "reused": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (created; reused when it holds this very set)")
    parser.add_argument("--images", type=int, default=FULL_SIZE, help=f"number of images (default {FULL_SIZE})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes drawing images (default: all cores)")
    args = parser.parse_args(argv)
    try:
        manifest = make_rehearsal(args.out, RehearsalConfig(images=args.images, seed=args.seed), args.workers)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    verb = "reused" if manifest["reused"] else f"written in {manifest['seconds']['total']:.0f} s"
    print(f"{args.out}: {manifest['counts']['images_listed']} images, {manifest['counts']['captions']} captions, "
          f"splits {manifest['counts']['splits']} ({verb})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

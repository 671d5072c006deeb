"""Command line: ``python -m invcap generate "a small red circle at the top left" --out image.png``.

Generates images from a caption with the generator that ``make generator`` (or ``make paper``)
saves (``invcap.generator``: the method notebook 05 chose on validation), upsamples them for
visibility and writes PNGs. With ``--samples S > 1`` the files are ``image-1.png`` ...
``image-S.png``; a method without a latent gives S identical images.
``python -m invcap train-generator`` builds that generator (what ``make generator`` runs).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m invcap", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate images from a caption (text -> image by inversion)")
    gen.add_argument("caption", help='what to draw, e.g. "a small red circle at the top left"')
    gen.add_argument("--out", default="image.png", help="output PNG (default: image.png)")
    gen.add_argument("--samples", type=int, default=1, help="images to generate for the caption (default: 1)")
    gen.add_argument("--checkpoint", default=None,
                     help="generator checkpoint (default: <cache>/generator/best.pt, written by `make generator`)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the latent samples (default: 0)")
    gen.add_argument("--scale", type=int, default=8,
                     help="nearest-neighbour upsampling factor: 32x32 images become 256x256 PNGs at 8 (default)")
    build = commands.add_parser("train-generator", help="train the generator and what it needs (make generator)")
    build.add_argument("--method", default=None, help="a registered method (default: notebook 05's choice)")
    build.add_argument("--steps", type=int, default=None, help="training steps (default: the chosen steps)")
    build.add_argument("--checkpoint", default=None, help="where to save it (default: <cache>/generator/best.pt)")
    return parser


def _output_paths(out: Path, samples: int) -> list[Path]:
    if samples == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(1, samples + 1)]


def _save_png(image, path: Path) -> None:
    """PIL image -> PNG through a temporary file and an atomic rename."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def generate(args: argparse.Namespace) -> list[Path]:
    """Validate cheap things first (no torch import), then load and run the generator."""
    if not args.caption.strip():
        raise ValueError('the caption is empty; describe the picture, e.g. "a small red circle at the top left"')
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.scale < 1:
        raise ValueError(f"--scale must be >= 1, got {args.scale}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {args.out!r}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import numpy as np
    import torch
    from PIL import Image

    from invcap.generator import TextToImage, default_generator_path

    checkpoint = Path(args.checkpoint) if args.checkpoint else default_generator_path()
    model = TextToImage.load(checkpoint)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    images = model.generate([args.caption], samples=args.samples, seed=args.seed)[0]   # (S, 3, H, W)
    images = torch.nn.functional.interpolate(images, scale_factor=args.scale, mode="nearest")
    paths = _output_paths(out, args.samples)
    for image, path in zip(images, paths):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        _save_png(Image.fromarray(pixels), path)
    return paths


def train_generator(args: argparse.Namespace) -> list[Path]:
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from invcap.generator import build_generator

    return [build_generator(Path(args.checkpoint) if args.checkpoint else None, args.method, args.steps)]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        paths = generate(args) if args.command == "generate" else train_generator(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

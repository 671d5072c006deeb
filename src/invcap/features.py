"""The bridge to notebooks 03-05: image latents and caption embeddings, computed once and cached.

``load_features(split)`` returns a ``Features`` record for one split of the embedded dataset (or
Flickr30k): the frozen autoencoder's latents (N, d), the frozen sentence encoder's embeddings of
every caption (N, k, d) with k = 5 captions per image, the captions, attributes, file names and
images. Everything is cached under ``cache_dir()`` keyed by what produced it, so later notebooks
never re-encode; if the autoencoder checkpoint is missing it is trained first, with the same
defaults as notebook 02 (``AutoencoderConfig``), so notebook 03 also works in a fresh clone.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from invcap.autoencoder import AutoencoderConfig, ConvAutoencoder, load_or_train_autoencoder
from invcap.cache import cache_key, cached_path
from invcap.data.flickr30k import CaptionedImages, embedded_dataset, load_flickr30k
from invcap.data.images import UInt8Images, decode_image, decode_images
from invcap.text import DEFAULT_MODEL, SentenceEncoder

__all__ = ["Features", "load_features", "get_dataset", "get_images", "encode_captions", "image_workers",
           "get_autoencoder", "get_encoder", "data_key", "autoencoder_config", "autoencoder_checkpoint"]

DATASETS = ("embedded", "flickr30k")


@dataclass
class Features:
    """One split's frozen representations. ``caption_embeddings[i, j]`` embeds ``captions[i][j]``."""

    split: str | None
    latents: torch.Tensor  # (N, d) autoencoder latents
    caption_embeddings: torch.Tensor  # (N, k, d) sentence embeddings
    captions: list[list[str]]
    attributes: list[dict] | None
    filenames: list[str]
    images: UInt8Images  # (N, 3, H, W): images[i] / images[a:b] are floats in [0, 1], held as uint8
    autoencoder: ConvAutoencoder = field(repr=False)
    encoder: SentenceEncoder = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    # embedded dataset: per image, per caption, the attribute names the caption states (else None)
    mentions: list[list[tuple[str, ...]]] | None = None

    def __len__(self) -> int:
        return len(self.filenames)

    def __repr__(self) -> str:
        return (f"Features(split={self.split!r}, n={len(self)}, latents={tuple(self.latents.shape)}, "
                f"caption_embeddings={tuple(self.caption_embeddings.shape)}, images={tuple(self.images.shape)})")


def _check_dataset(dataset: str, root) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if dataset == "flickr30k" and not root:
        raise ValueError("dataset='flickr30k' needs root= (or the notebook parameter DATA_ROOT): the folder "
                         "holding dataset_flickr30k.json / results.csv / results_20130124.token and the images")


def get_dataset(split: str | None = None, dataset: str = "embedded", root: str | os.PathLike | None = None,
                image_size: int = 32, seed: int = 0) -> CaptionedImages:
    """The ``CaptionedImages`` of one split: the embedded default (generated on first use) or
    Flickr30k under ``root``."""
    _check_dataset(dataset, root)
    if dataset == "embedded":
        return embedded_dataset(split=split, image_size=image_size, seed=seed, root=root)
    return load_flickr30k(root, split=split, image_size=image_size)


def data_key(dataset: str = "embedded", root: str | os.PathLike | None = None, image_size: int = 32,
             seed: int = 0) -> str:
    """A string naming the data, for cache keys: the embedded configuration's folder, or the
    resolved Flickr30k annotation file with its size and modification time."""
    _check_dataset(dataset, root)
    if dataset == "embedded":
        from invcap.data.embedded import make_embedded_dataset

        return f"embedded:{make_embedded_dataset(root=root, seed=seed, image_size=image_size).name}"
    from invcap.data.flickr30k import find_annotations

    ann = find_annotations(root).resolve()
    stat = ann.stat()
    return f"flickr30k:{ann}:{stat.st_size}:{int(stat.st_mtime)}:{image_size}"


def image_workers(n_images: int) -> int:
    """Processes that decode ``n_images`` (0: decode here): ``INVCAP_WORKERS`` if set, else every core
    for a large folder; a few hundred images decode faster than worker processes start."""
    if os.environ.get("INVCAP_WORKERS"):
        return max(0, int(os.environ["INVCAP_WORKERS"]))
    return 0 if n_images < 2000 else min(8, os.cpu_count() or 1)


def get_images(data: CaptionedImages, key: str, progress: bool = True) -> UInt8Images:
    """All images of ``data`` as a (N, 3, H, W) ``UInt8Images`` view (indexing gives floats in [0, 1]).
    Decoded once, by ``image_workers`` processes, and cached as uint8 under ``cache_dir()/images``
    (decoding 30k Flickr JPEGs takes minutes, reading the cache a second); a float copy of the
    whole split is never made."""
    from invcap.io import save_torch_atomic

    # the decoding code (resize, crop, JPEG draft) decides the pixels as much as the files do
    path = cached_path("images", f"images-{data.image_size}px",
                       cache_key({"image_size": data.image_size}, [key, data.filenames], [decode_image, decode_images]))
    if path.is_file():
        pixels = torch.load(path, weights_only=True, mmap=True)  # mmap: pages are read as batches touch them
    else:
        pixels = data.decode(workers=image_workers(len(data)), progress=progress)
        save_torch_atomic(pixels, path)
    return UInt8Images(pixels)


def encode_captions(encoder: SentenceEncoder, texts: list[str], chunk: int = 8192, progress: bool = True
                    ) -> torch.Tensor:
    """(N, d) embeddings of ``texts`` in chunks through the encoder's cache, with one progress line:
    each chunk is written to the cache as it is encoded, so a killed run resumes where it stopped."""
    from invcap.progress import progress as bar

    out = torch.empty(len(texts), encoder.dim)
    with bar(total=len(texts), desc="encoding captions", unit="caption", disable=not progress) as shown:
        for start in range(0, len(texts), chunk):
            out[start:start + chunk] = encoder.encode(texts[start:start + chunk], progress=False)
            shown.update(len(texts[start:start + chunk]))
    return out


_ENCODERS: dict[tuple[str, str], SentenceEncoder] = {}


def get_encoder(model: str = DEFAULT_MODEL, device: str | torch.device = "auto") -> SentenceEncoder:
    """The frozen sentence encoder (one instance per model and device in this process)."""
    from invcap.repro import resolve_device

    slot = (model, str(resolve_device(device)))
    if slot not in _ENCODERS:
        _ENCODERS[slot] = SentenceEncoder(model, device=slot[1])
    return _ENCODERS[slot]


def autoencoder_config(image_size: int = 32, seed: int = 0, latent_dim: int | None = None,
                       **config: Any) -> AutoencoderConfig:
    """``AutoencoderConfig`` with ``latent_dim`` defaulting to the default sentence encoder's
    dimension (read from the model, never hard-coded) and ``config`` overriding other fields."""
    if latent_dim is None:
        latent_dim = get_encoder(device="cpu").dim
    return AutoencoderConfig(latent_dim=latent_dim, image_size=image_size, seed=seed, **config)


def autoencoder_checkpoint(config: AutoencoderConfig, data: str):
    """Where the autoencoder for ``config`` trained on the data named ``data`` lives:
    ``cache_dir()/autoencoder/autoencoder-<config.key(data)>.pt`` (the key covers the
    configuration, the data and the model/training code, ``AutoencoderConfig.key``)."""
    return cached_path("autoencoder", "autoencoder", config.key(data))


def get_autoencoder(dataset: str = "embedded", root: str | os.PathLike | None = None, image_size: int = 32,
                    seed: int = 0, device: str | torch.device = "auto", latent_dim: int | None = None,
                    progress: bool = True, **config: Any) -> tuple[ConvAutoencoder, dict[str, Any]]:
    """The frozen autoencoder trained on the train split (validated on val), from its
    checkpoint when one exists for this configuration, else trained now. ``latent_dim``
    defaults to the default sentence encoder's dimension (384); ``config`` overrides other
    ``AutoencoderConfig`` fields (``epochs``, ``widths``, ``lr``, ...)."""
    cfg = autoencoder_config(image_size, seed, latent_dim, **config)
    key = data_key(dataset, root, image_size, seed)
    checkpoint = autoencoder_checkpoint(cfg, key)
    if checkpoint.is_file() and checkpoint.with_suffix(".json").is_file():  # no need to decode images
        empty = torch.empty(0, 3, image_size, image_size)
        return load_or_train_autoencoder(empty, None, cfg, key, checkpoint, device, progress)
    everything = get_dataset(None, dataset, root, image_size, seed)
    if everything.splits is None:
        warnings.warn(f"{everything.annotation_file.name} carries no splits: the autoencoder trains on all "
                      f"{len(everything)} images and has no validation set", stacklevel=2)
        train, val = everything, None
    else:
        train = get_dataset("train", dataset, root, image_size, seed)
        val = get_dataset("val", dataset, root, image_size, seed) if "val" in everything.splits else None
    return load_or_train_autoencoder(get_images(train, key, progress),
                                     None if val is None else get_images(val, key, progress),
                                     cfg, key, checkpoint, device, progress)


@torch.no_grad()
def _encode_images(model: ConvAutoencoder, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([model.encode(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)]) if len(images) else torch.empty(0, model.latent_dim)


# The code that computes a features file (bound at import, so the key names the code on disk).
FEATURES_CODE = (_encode_images,)


def load_features(split: str | None, dataset: str = "embedded", root: str | os.PathLike | None = None,
                  image_size: int = 32, seed: int = 0, device: str | torch.device = "auto",
                  model: str = DEFAULT_MODEL, progress: bool = True, **autoencoder_config: Any) -> Features:
    """Latents, caption embeddings, captions, attributes and images of one split (``train``,
    ``val``, ``test``, ``compositional_val``, ``compositional_test`` for the embedded set; None for
    every image), cached under ``cache_dir()/features`` keyed by the data, the autoencoder and the
    sentence model."""
    from invcap.io import save_torch_atomic

    encoder = get_encoder(model, device)
    autoencoder, ae_info = get_autoencoder(dataset, root, image_size, seed, device, encoder.dim, progress,
                                           **autoencoder_config)
    data = get_dataset(split, dataset, root, image_size, seed)
    key = data_key(dataset, root, image_size, seed)
    counts = {len(c) for c in data.captions}
    k = min(counts)
    if k == 0:
        raise ValueError(f"some images of split {split!r} have no caption; cannot build (N, k, d) embeddings")
    if len(counts) > 1:
        warnings.warn(f"images have {sorted(counts)} captions; keeping the first {k} of each", stacklevel=2)
    captions = [c[:k] for c in data.captions]
    path = cached_path("features", f"{split}", cache_key({"split": split, "model": model, "captions_per_image": k},
                                                         [key, data.filenames, captions, ae_info["key"], encoder.cache_key],
                                                         FEATURES_CODE))
    images = get_images(data, key, progress)
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        latents, embeddings = cached["latents"], cached["caption_embeddings"]
    else:
        latents = _encode_images(autoencoder, images)
        flat = encode_captions(encoder, [c for caps in captions for c in caps], progress=progress)
        embeddings = flat.view(len(captions), k, encoder.dim)
        save_torch_atomic({"latents": latents, "caption_embeddings": embeddings}, path)
    info = {"dataset": dataset, "data_key": key, "image_size": image_size, "seed": seed, "model": model,
            "autoencoder_key": ae_info["key"], "autoencoder_checkpoint": ae_info["checkpoint"], "cache": str(path)}
    mentions = None if data.mentions is None else [m[:k] for m in data.mentions]
    return Features(split, latents, embeddings, captions, data.attributes, list(data.filenames), images,
                    autoencoder, encoder, info, mentions)

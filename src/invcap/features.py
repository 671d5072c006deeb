"""The bridge to notebooks 03-05: image latents and caption embeddings, computed once and cached.

``load_features(split)`` returns a ``Features`` record for one split of the embedded dataset (or
Flickr30k): the frozen autoencoder's latents (N, d), the frozen sentence encoder's embeddings of
every caption (N, k, d) with k = 5 captions per image, the captions, attributes, file names and
images. Everything is cached under ``cache_dir()`` keyed by what produced it, so later notebooks
never re-encode; if the autoencoder checkpoint is missing it is trained first, with the same
defaults as notebook 02 (``AutoencoderConfig``), so notebook 03 also works in a fresh clone.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from invcap.autoencoder import AutoencoderConfig, ConvAutoencoder, load_or_train_autoencoder
from invcap.data.flickr30k import CaptionedImages, embedded_dataset, load_flickr30k
from invcap.text import DEFAULT_MODEL, SentenceEncoder

__all__ = ["Features", "load_features", "get_dataset", "get_images", "get_autoencoder", "get_encoder",
           "data_key", "similarity_by_attribute_distance", "caption_retrieval_accuracy", "plot_caption_similarity",
           "ridge_probe", "attribute_probe", "duplicate_caption_share"]

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
    images: torch.Tensor  # (N, 3, H, W) in [0, 1]
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


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def get_images(data: CaptionedImages, key: str, progress: bool = True) -> torch.Tensor:
    """All images of ``data`` as (N, 3, H, W) floats; cached as uint8 under
    ``cache_dir()/images`` (decoding 30k Flickr JPEGs takes minutes, reading the cache seconds)."""
    from invcap.io import cache_dir, save_torch_atomic

    path = cache_dir() / "images" / f"{_key(key, data.filenames, data.image_size)}.pt"
    if path.is_file():
        pixels = torch.load(path, weights_only=True)
    else:
        workers = 0 if len(data) < 20000 else min(8, os.cpu_count() or 1)
        pixels = (data.stack_images(num_workers=workers, progress=progress) * 255).round().to(torch.uint8)
        save_torch_atomic(pixels, path)
    return pixels.float() / 255


_ENCODERS: dict[tuple[str, str], SentenceEncoder] = {}


def get_encoder(model: str = DEFAULT_MODEL, device: str | torch.device = "auto") -> SentenceEncoder:
    """The frozen sentence encoder (one instance per model and device in this process)."""
    from invcap.repro import resolve_device

    slot = (model, str(resolve_device(device)))
    if slot not in _ENCODERS:
        _ENCODERS[slot] = SentenceEncoder(model, device=slot[1])
    return _ENCODERS[slot]


def get_autoencoder(dataset: str = "embedded", root: str | os.PathLike | None = None, image_size: int = 32,
                    seed: int = 0, device: str | torch.device = "auto", latent_dim: int | None = None,
                    progress: bool = True, **config: Any) -> tuple[ConvAutoencoder, dict[str, Any]]:
    """The frozen autoencoder trained on the train split (validated on val), from its
    checkpoint when one exists for this configuration, else trained now. ``latent_dim``
    defaults to the default sentence encoder's dimension (384); ``config`` overrides other
    ``AutoencoderConfig`` fields (``epochs``, ``widths``, ``lr``, ...)."""
    if latent_dim is None:
        latent_dim = get_encoder(device="cpu").dim  # read from the model, never hard-coded
    cfg = AutoencoderConfig(latent_dim=latent_dim, image_size=image_size, seed=seed, **config)
    key = data_key(dataset, root, image_size, seed)
    from invcap.io import cache_dir

    checkpoint = cache_dir() / "autoencoder" / f"{cfg.key(key)}.pt"
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


def load_features(split: str | None, dataset: str = "embedded", root: str | os.PathLike | None = None,
                  image_size: int = 32, seed: int = 0, device: str | torch.device = "auto",
                  model: str = DEFAULT_MODEL, progress: bool = True, **autoencoder_config: Any) -> Features:
    """Latents, caption embeddings, captions, attributes and images of one split (``train``,
    ``val``, ``test``, ``compositional_val``, ``compositional_test`` for the embedded set; None for
    every image), cached
    under ``cache_dir()/features`` keyed by the data, the autoencoder and the sentence model."""
    from invcap.io import cache_dir, save_torch_atomic

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
    path = cache_dir() / "features" / f"{_key(key, split, data.filenames, ae_info['key'], model, k)}.pt"
    images = get_images(data, key, progress)
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        latents, embeddings = cached["latents"], cached["caption_embeddings"]
    else:
        latents = _encode_images(autoencoder, images)
        flat = encoder.encode([c for caps in captions for c in caps], progress=progress)
        embeddings = flat.view(len(captions), k, encoder.dim)
        save_torch_atomic({"latents": latents, "caption_embeddings": embeddings}, path)
    info = {"dataset": dataset, "data_key": key, "image_size": image_size, "seed": seed, "model": model,
            "autoencoder_key": ae_info["key"], "autoencoder_checkpoint": ae_info["checkpoint"], "cache": str(path)}
    mentions = None if data.mentions is None else [m[:k] for m in data.mentions]
    return Features(split, latents, embeddings, captions, data.attributes, list(data.filenames), images,
                    autoencoder, encoder, info, mentions)


# --- caption-embedding structure (notebook 02) -----------------------------------------------

def _cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    flat = torch.nn.functional.normalize(embeddings.reshape(-1, embeddings.shape[-1]).double(), dim=1)
    return flat @ flat.T


def similarity_by_attribute_distance(caption_embeddings: torch.Tensor,
                                     attributes: list[dict[str, str]]) -> dict[str, Any]:
    """Mean cosine similarity between captions, grouped by how their images relate: the same
    image, other images with the same attributes, and images differing in exactly 1, 2, 3 or
    4 attributes (and, for one differing attribute, which one). (N, k, d) embeddings."""
    n, k, _ = caption_embeddings.shape
    if len(attributes) != n:
        raise ValueError(f"{n} images of embeddings but {len(attributes)} attribute dicts")
    sims = _cosine_matrix(caption_embeddings)
    names = list(attributes[0])
    values = {name: sorted({a[name] for a in attributes}) for name in names}
    codes = torch.tensor([[values[name].index(a[name]) for name in names] for a in attributes])
    differ = (codes[:, None, :] != codes[None, :, :])  # (n, n, attributes)
    image = torch.arange(n).repeat_interleave(k)
    same_image = image[:, None] == image[None, :]
    not_self = ~torch.eye(n * k, dtype=torch.bool)
    expand = lambda m: m[image][:, image]  # noqa: E731 - image-level mask -> caption-level mask
    hamming = expand(differ.sum(-1))
    groups = {"same image": same_image & not_self, "same attributes, other image": (hamming == 0) & ~same_image}
    for d in range(1, len(names) + 1):
        groups[f"{d} attribute{'s' if d > 1 else ''} differ"] = hamming == d
    one = {name: expand(differ[..., i]) & (hamming == 1) for i, name in enumerate(names)}
    mean = lambda mask: float(sims[mask].mean()) if bool(mask.any()) else float("nan")  # noqa: E731
    return {"mean_cosine": {g: mean(m) for g, m in groups.items()},
            "pairs": {g: int(m.sum()) for g, m in groups.items()},
            "only_this_attribute_differs": {name: mean(m) for name, m in one.items()}}


def caption_retrieval_accuracy(caption_embeddings: torch.Tensor, labels: list | None = None) -> float:
    """Share of captions whose nearest other caption (cosine) belongs to the same group: the same
    image when ``labels`` is None, else the same label (e.g. the same attribute combination)."""
    n, k, _ = caption_embeddings.shape
    if k < 2 and labels is None:
        raise ValueError("need at least 2 captions per image to retrieve a caption of the same image")
    sims = _cosine_matrix(caption_embeddings)
    sims.fill_diagonal_(-float("inf"))
    image = torch.arange(n).repeat_interleave(k)
    if labels is not None and len(labels) != n:
        raise ValueError(f"{n} images of embeddings but {len(labels)} labels")
    if labels is None:
        group = image
    else:
        ids = {str(label): i for i, label in enumerate(dict.fromkeys(map(str, labels)))}
        group = torch.tensor([ids[str(labels[i])] for i in image.tolist()])
    nearest = sims.argmax(1)
    return float((group[nearest] == group).double().mean())


def plot_caption_similarity(caption_embeddings: torch.Tensor, n_images: int = 12,
                            by_distance: dict[str, Any] | None = None):
    """Left: cosine similarity between the captions of the first ``n_images`` images (5 per
    image, in blocks). Right (with ``by_distance`` from ``similarity_by_attribute_distance``):
    mean similarity by how the two captions' images relate."""
    import matplotlib.pyplot as plt

    emb = caption_embeddings[:n_images]
    n, k, _ = emb.shape
    sims = _cosine_matrix(emb).float().numpy()
    panels = 2 if by_distance else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5.2), squeeze=False)
    ax = axes[0, 0]
    im = ax.imshow(sims, cmap="viridis", vmin=min(0.0, float(sims.min())), vmax=1.0)
    ticks = [i * k + (k - 1) / 2 for i in range(n)]
    ax.set_xticks(ticks, [str(i) for i in range(n)], fontsize=7)
    ax.set_yticks(ticks, [str(i) for i in range(n)], fontsize=7)
    for b in range(1, n):
        ax.axhline(b * k - 0.5, color="white", lw=0.4), ax.axvline(b * k - 0.5, color="white", lw=0.4)
    ax.set_xlabel(f"caption (grouped by image, {k} per image)")
    ax.set_ylabel(f"caption (grouped by image, {k} per image)")
    ax.set_title("cosine similarity of caption embeddings")
    fig.colorbar(im, ax=ax, fraction=0.046, label="cosine similarity")
    if by_distance:
        ax = axes[0, 1]
        groups = list(by_distance["mean_cosine"].items())
        singles = [(f"only {a} differs", v) for a, v in by_distance["only_this_attribute_differs"].items()]
        labels, values = zip(*(groups + singles))
        colours = ["tab:blue"] * len(groups) + ["tab:orange"] * len(singles)
        ax.barh(range(len(values)), values, color=colours)
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("mean cosine similarity between two captions")
        ax.set_title("similarity by how the two images relate")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def ridge_probe(train_x: torch.Tensor, train_labels: list, test_x: torch.Tensor, test_labels: list,
                ridge: float = 1e-2) -> float:
    """Accuracy of a linear read-out: ridge regression from features to one-hot labels (closed
    form, float64, bias included), predicting the arg-max class on the test set."""
    if train_x.dim() != 2 or test_x.dim() != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"expected (N, d) train and test features, got {tuple(train_x.shape)} and {tuple(test_x.shape)}")
    if len(train_labels) != len(train_x) or len(test_labels) != len(test_x):
        raise ValueError("one label per row is needed")
    classes = sorted(set(map(str, train_labels)))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.zeros(len(train_x), len(classes), dtype=torch.float64)
    y[torch.arange(len(train_x)), torch.tensor([index[str(l)] for l in train_labels])] = 1.0
    add_bias = lambda x: torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)  # noqa: E731
    x = add_bias(train_x)
    penalty = ridge * torch.eye(x.shape[1], dtype=torch.float64)
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    weights = torch.linalg.solve(x.T @ x + penalty, x.T @ y)
    predicted = [classes[i] for i in (add_bias(test_x) @ weights).argmax(1).tolist()]
    return sum(p == str(l) for p, l in zip(predicted, test_labels)) / max(len(test_labels), 1)


def attribute_probe(train: tuple[torch.Tensor, list[dict]], tests: dict[str, tuple[torch.Tensor, list[dict]]],
                    ridge: float = 1e-2) -> dict[str, dict[str, float]]:
    """For each attribute, the accuracy of a ridge probe trained on caption embeddings
    ``train = ((N, k, d), attributes)`` and tested on each of ``tests``: how linearly readable
    the attribute is from a single caption's embedding."""
    emb, attrs = train
    k = emb.shape[1]
    flat = emb.reshape(-1, emb.shape[-1])
    out: dict[str, dict[str, float]] = {}
    for name in attrs[0]:
        labels = [a[name] for a in attrs for _ in range(k)]
        out[name] = {}
        for test_name, (t_emb, t_attrs) in tests.items():
            t_labels = [a[name] for a in t_attrs for _ in range(t_emb.shape[1])]
            out[name][test_name] = ridge_probe(flat, labels, t_emb.reshape(-1, t_emb.shape[-1]), t_labels, ridge)
    return out


def duplicate_caption_share(captions: list[list[str]]) -> float:
    """Share of captions whose exact text also describes another image."""
    owners: dict[str, set[int]] = {}
    for i, caps in enumerate(captions):
        for c in caps:
            owners.setdefault(c, set()).add(i)
    total = sum(len(c) for c in captions)
    return sum(1 for caps in captions for c in caps if len(owners[c]) > 1) / max(total, 1)

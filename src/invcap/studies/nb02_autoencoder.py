"""Notebook 02 (``notebooks/02_autoencoder.ipynb``): captioned images, sentence embeddings and
the frozen image autoencoder whose flattened latent has the sentence embedding's size.

Steps the notebook calls, in order: ``load_data`` -> ``summarize_data`` -> ``train_autoencoder``
-> ``build_features`` (the latents and caption embeddings notebooks 02-05 read, cached for 03-05)
-> ``analyse_captions`` -> ``reconstruction_metrics`` -> ``write_results``. The results file is
``results/autoencoder.json`` (schema: ``RESULTS_KEYS``); ``verdicts(results, part)`` is the text of
the checked cells, ``tables(results, part)`` the exact numbers, ``summary_text`` the narrative.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from invcap import autoencoder as ae
from invcap import features as fe
from invcap.data.flickr30k import CaptionedImages
from invcap.features import Features
from invcap.io import read_json, results_dir, write_json_atomic
from invcap.linalg import cosine_similarity_matrix, label_codes
from invcap.repro import resolve_device, run_record
from invcap.studies.common import NotebookParams

__all__ = ["Params", "Data", "load_data", "summarize_data", "train_autoencoder", "build_features",
           "analyse_captions", "held_out_images", "reconstruction_metrics", "write_results", "load_results", "features_kwargs", "verdicts", "tables",
           "summary_text", "similarity_by_attribute_distance", "caption_retrieval_accuracy", "ridge_probe",
           "attribute_probe", "duplicate_caption_share", "plot_samples", "plot_caption_similarity",
           "plot_training_curve", "plot_reconstructions", "README_BLOCKS", "KEY_NUMBERS"]

RESULTS = "autoencoder.json"
RESULTS_KEYS = ("run", "data", "latent_shape", "latent_dim", "embedding_dim", "metrics", "goal", "training",
                "caption_embeddings")
GOAL_PSNR_DB = 25.0          # test PSNR the 384-number latent must reach
PROBE_SPLIT = "val"          # the linear probes train on this split's captions
# Splits whose captions only the post-notebook final table reads (make paper): they are encoded
# there, on first use, so that `make test` does not pay for them (2,400 captions, ~20 s on one
# thread). Notebook 02 still reports their reconstructions.
ENCODED_LATER = ("compositional_test",)


@dataclass(frozen=True)
class Params(NotebookParams):
    dataset: str = "embedded"    # "embedded" (generated, no download) or "flickr30k"
    data_root: str | None = None
    image_size: int = 32
    epochs: int = 10   # = AutoencoderConfig's default (its comment: the measured decoder ceiling)
    device: str = "auto"
    seed: int = 0
    n_samples: int = 6
    n_heatmap: int = 12

    def data_args(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "root": self.data_root, "image_size": self.image_size, "seed": self.seed}


# --- steps ---------------------------------------------------------------------------------

@dataclass
class Data:
    everything: CaptionedImages
    splits: dict[str, CaptionedImages]
    key: str                      # fe.data_key: names the data in every cache key


def load_data(params: Params) -> Data:
    """Every image and each split; a ValueError when the data lacks the train and test splits."""
    args = params.data_args()
    everything = fe.get_dataset(None, args["dataset"], args["root"], args["image_size"], args["seed"])
    names = everything.available_splits
    if not {"train", "test"} <= set(names):
        raise ValueError(f"{params.data_root or params.dataset} carries the splits {names}; notebook 02 trains on "
                         f"'train' and reports on 'test': put the Karpathy split file dataset_flickr30k.json "
                         f"under DATA_ROOT")
    splits = {s: fe.get_dataset(s, args["dataset"], args["root"], args["image_size"], args["seed"]) for s in names}
    return Data(everything, splits, fe.data_key(args["dataset"], args["root"], args["image_size"], args["seed"]))


def summarize_data(data: Data) -> dict[str, Any]:
    """{"data": counts per split, captions per image and, with attributes, how many attribute
    combinations each split shares with train (0 for the compositional splits)}."""
    out: dict[str, Any] = {"n_images": len(data.everything), "n_captions": sum(map(len, data.everything.captions)),
                           "image_size": data.everything.image_size, "skipped_images": len(data.everything.skipped),
                           "splits": {}}
    train_combos = ({tuple(sorted(a.items())) for a in data.splits["train"].attributes}
                    if data.everything.attributes is not None else None)
    for name, split in data.splits.items():
        row: dict[str, Any] = {"images": len(split), "captions_per_image": sorted({len(c) for c in split.captions})}
        if train_combos is not None:
            combos = {tuple(sorted(a.items())) for a in split.attributes}
            row.update(combinations=len(combos), combinations_in_train=len(combos & train_combos))
        out["splits"][name] = row
    return {"data": out}


def train_autoencoder(params: Params, progress: bool = True) -> tuple[ae.ConvAutoencoder, dict[str, Any]]:
    """The frozen autoencoder, from its checkpoint or trained now (``features.get_autoencoder``)."""
    return fe.get_autoencoder(**params.data_args(), device=params.device, epochs=params.epochs, progress=progress)


def build_features(params: Params, data: Data, progress: bool = True) -> dict[str, Features]:
    """The latents and caption embeddings of every split notebooks 02-05 read (cached: notebooks
    03-05 load them from the cache); the ``ENCODED_LATER`` splits are encoded on first use."""
    return {name: fe.load_features(name, **params.data_args(), device=params.device, progress=progress,
                                   epochs=params.epochs) for name in data.splits if name not in ENCODED_LATER}


def held_out_images(data: Data, features: dict[str, Features]) -> dict[str, torch.Tensor]:
    """Every split's images but train's: the features' where built, else from the image cache."""
    return {name: features[name].images if name in features else fe.get_images(split, data.key, progress=False)
            for name, split in data.splits.items() if name != "train"}


def analyse_captions(features: dict[str, Features]) -> dict[str, Any]:
    """{"caption_embeddings": how the sentence encoder arranges the test captions (and, with
    attributes, probes trained on the ``PROBE_SPLIT`` captions and tested on every other held-out
    split)}."""
    test = features["test"]
    emb, attrs = test.caption_embeddings, test.attributes
    out: dict[str, Any] = {"nearest_caption_same_image": caption_retrieval_accuracy(emb),
                           "duplicate_caption_share": duplicate_caption_share(test.captions),
                           "nearest_caption_same_attributes": None, "similarity_structure": None,
                           "linear_probe_accuracy": None}
    if attrs is not None:
        out["nearest_caption_same_attributes"] = caption_retrieval_accuracy(
            emb, labels=[tuple(sorted(a.items())) for a in attrs])
        out["similarity_structure"] = similarity_by_attribute_distance(emb, attrs)
        if PROBE_SPLIT in features:
            probe = features[PROBE_SPLIT]
            tests = {n: (f.caption_embeddings, f.attributes) for n, f in features.items() if n not in ("train", PROBE_SPLIT)}
            out["linear_probe_accuracy"] = attribute_probe((probe.caption_embeddings, probe.attributes), tests)
    return {"caption_embeddings": out}


def reconstruction_metrics(model: ae.ConvAutoencoder, info: dict[str, Any], data: Data,
                           features: dict[str, Features]) -> dict[str, Any]:
    """The autoencoder's part of the results: latent shape against the sentence embedding's
    dimension, training record, and MSE / PSNR / SSIM of the reconstructions of every split but
    train, with the PSNR goal."""
    metrics = {name: ae.evaluate_reconstruction(model, x) for name, x in held_out_images(data, features).items()}
    return {"latent_shape": list(model.latent_shape), "latent_dim": model.latent_dim,
            "embedding_dim": features["test"].encoder.dim, "metrics": metrics,
            "goal": {"test_psnr_db_at_least": GOAL_PSNR_DB, "met": metrics["test"]["psnr_db"] >= GOAL_PSNR_DB},
            "training": {"history": info["history"], "train_seconds": info["train_seconds"], "n_train": info["n_train"],
                         "n_val": info["n_val"], "trained_on_device": info["device"], "checkpoint_key": info["key"],
                         "reused_checkpoint": info["reused"], "config": info["config"],
                         "parameters": sum(p.numel() for p in model.parameters())}}


def write_results(params: Params, data: Data, timings: dict[str, float], *parts: dict[str, Any]) -> dict[str, Any]:
    """``results_dir()/autoencoder.json`` from the steps' parts; returns what it wrote."""
    record: dict[str, Any] = {"run": run_record(params.as_dict(), params.seed, resolve_device(params.device), data=data.key,
                                                timings=timings)}
    for part in parts:
        record.update(part)
    missing = [k for k in RESULTS_KEYS if k not in record]
    if missing:
        raise ValueError(f"results of notebook 02 lack {missing}: pass every step's part to write_results")
    write_json_atomic(results_dir() / RESULTS, record)
    return record


def load_results(folder: Path | None = None) -> dict[str, Any]:
    return read_json((folder or results_dir()) / RESULTS, "notebooks/02_autoencoder.ipynb")


def features_kwargs(dataset: str = "embedded", root: str | None = None, image_size: int = 32, seed: int = 0,
                    folder: Path | None = None) -> dict[str, Any]:
    """The keyword arguments of ``features.load_features`` that give notebook 02's latents: the
    data, and the autoencoder configuration notebook 02 recorded in ``results/autoencoder.json``
    (so a later notebook never trains a second autoencoder with other settings). A
    FileNotFoundError when notebook 02 has not run; a ValueError when it ran on other data."""
    record = load_results(folder)
    ran = record["run"]["config"]
    asked = {"dataset": dataset, "data_root": root, "image_size": image_size, "seed": seed}
    differ = {k: (ran.get(k), v) for k, v in asked.items() if ran.get(k) != v}
    if differ:
        detail = ", ".join(f"{k}: notebook 02 ran with {a!r}, now {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"notebook 02's results are for other data ({detail}); run notebooks/02_autoencoder.ipynb "
                         f"with the same DATASET, DATA_ROOT, IMAGE_SIZE and SEED first")
    config = {k: v for k, v in record["training"]["config"].items() if k not in ("latent_dim", "image_size", "seed")}
    config["widths"] = tuple(config["widths"])
    return {"dataset": dataset, "root": root, "image_size": image_size, "seed": seed, **config}


# --- what the notebook prints ----------------------------------------------------------------

def threads_text(r: dict[str, Any]) -> str:
    n = r["run"]["device"]["threads"]
    return f"{n} thread" + ("" if n == 1 else "s")


def _band(label: str, value: float, low: float, high: float, unit: str = "") -> str:
    return f"{label} between {low:g} and {high:g}{unit}: {low <= value <= high}"


def _measured(values: dict[str, float | None]) -> dict[str, float]:
    """The groups that had pairs (a group without pairs is NaN, written as null)."""
    out = {k: v for k, v in values.items() if v is not None and v == v}
    return out or {"(no pairs)": float("nan")}


def verdicts(results: dict[str, Any], part: str) -> str:
    """The text of notebook 02's checked cells (``part``: "data", "captions" or "autoencoder"):
    counts, verdicts and numbers in stated bands that hold on any CPU."""
    lines: list[str] = []
    if part == "data":
        d = results["data"]
        lines.append(f"{d['n_images']} images, {d['n_captions']} captions, {d['image_size']}x{d['image_size']} pixels, "
                     f"{d['skipped_images']} unreadable images skipped")
        for name, row in d["splits"].items():
            combos = (f"; {row['combinations']} attribute combinations, {row['combinations_in_train']} of them in train"
                      if "combinations" in row else "")
            lines.append(f"  {name:>18}: {row['images']:6d} images, captions per image {row['captions_per_image']}{combos}")
    elif part == "captions":
        c = results["caption_embeddings"]
        lines.append(_band("share of test captions whose nearest other caption is of the same image",
                           c["nearest_caption_same_image"], 0.0, 0.2))
        if c["similarity_structure"] is not None:
            lines.append(_band("share whose nearest other caption has the same attributes",
                               c["nearest_caption_same_attributes"], 0.05, 0.6))
            mean = c["similarity_structure"]["mean_cosine"]
            differ = [v for g, v in _measured(mean).items() if "differ" in g]
            lines.append(f"similarity falls with every further differing attribute: "
                         f"{all(a > b for a, b in zip(differ, differ[1:]))}")
            single = _measured(c["similarity_structure"]["only_this_attribute_differs"])
            lines.append(f"two paraphrases of one image are no closer than two captions differing only in "
                         f"{max(single, key=single.get)} (within 0.05): {mean['same image'] < max(single.values()) + 0.05}")
        if c["linear_probe_accuracy"] is not None:
            for name, accs in c["linear_probe_accuracy"].items():
                lines.append(_band(f"linear probe accuracy for {name} on every held-out split", min(accs.values()), 0.6, 1.0))
    elif part == "autoencoder":
        m = results["metrics"]
        c, h, w = results["latent_shape"]
        lines.append(f"latent {c} x {h} x {w} = {results['latent_dim']} numbers = sentence embedding dimension: "
                     f"{results['latent_dim'] == results['embedding_dim']}")
        lines.append(_band("test PSNR", m["test"]["psnr_db"], 27.0, 35.0, " dB"))
        lines.append(_band("test SSIM", m["test"]["ssim"], 0.8, 1.0))
        lines.append(f"test PSNR >= {GOAL_PSNR_DB:g} dB (the goal): {results['goal']['met']}")
        for name in m:
            if name.startswith("compositional"):
                lines.append(f"{name}: PSNR below the test split's (unseen pairings are harder): "
                             f"{m[name]['psnr_db'] < m['test']['psnr_db']}")
    else:
        raise ValueError(f"part must be 'data', 'captions' or 'autoencoder', got {part!r}")
    return "\n".join(lines)


def tables(results: dict[str, Any], part: str) -> str:
    """Exact numbers (printed under NBVAL_IGNORE_OUTPUT): "captions" or "autoencoder"."""
    lines: list[str] = []
    if part == "captions":
        c = results["caption_embeddings"]
        lines.append(f"test captions whose exact text also describes another test image: {c['duplicate_caption_share']:.3f}")
        lines.append(f"nearest other caption from the same image: {c['nearest_caption_same_image']:.3f}")
        if c["similarity_structure"] is not None:
            lines.append(f"nearest other caption with the same attributes: {c['nearest_caption_same_attributes']:.3f}")
            lines.append("mean cosine similarity between two test captions:")
            for group, value in c["similarity_structure"]["mean_cosine"].items():
                lines.append(f"  {group:<30} {value:.3f}")
            for name, value in c["similarity_structure"]["only_this_attribute_differs"].items():
                lines.append(f"  only {name:<25} {value:.3f}")
        if c["linear_probe_accuracy"] is not None:
            lines.append(f"linear probe (ridge, trained on {PROBE_SPLIT} captions), accuracy per caption:")
            for name, accs in c["linear_probe_accuracy"].items():
                lines.append(f"  {name:<9}" + "  ".join(f"{split} {acc:.3f}" for split, acc in accs.items()))
    elif part == "autoencoder":
        t = results["training"]
        lines.append(f"{t['parameters']:,} parameters; {'checkpoint reused' if t['reused_checkpoint'] else 'trained'} "
                     f"({t['train_seconds']:.0f} s of training on {t['trained_on_device']}, {t['n_train']} images)")
        lines.append(f"{'split':>18}  {'MSE':>8}  {'PSNR (dB)':>9}  {'SSIM':>6}")
        for name, m in results["metrics"].items():
            lines.append(f"{name:>18}  {m['mse']:8.2e}  {m['psnr_db']:9.2f}  {m['ssim']:6.3f}")
    else:
        raise ValueError(f"part must be 'captions' or 'autoencoder', got {part!r}")
    return "\n".join(lines)


def summary_text(results: dict[str, Any]) -> str:
    """The closing narrative, in Markdown, every number from ``results``."""
    m, c = results["metrics"], results["caption_embeddings"]
    test = m["test"]
    spare = test["psnr_db"] - GOAL_PSNR_DB
    lines = [f"**Autoencoder.** On the test split the {results['latent_dim']}-number latent reconstructs images at "
             f"{test['psnr_db']:.1f} dB PSNR (SSIM {test['ssim']:.2f}): the {GOAL_PSNR_DB:g} dB goal is "
             + (f"met with {spare:.1f} dB to spare." if spare >= 0 else f"missed by {-spare:.1f} dB.")]
    for name in (n for n in m if n.startswith("compositional")):
        gap = test["psnr_db"] - m[name]["psnr_db"]
        lines.append(f"On the {name} split (attribute pairings never seen in training) it reaches "
                     f"{m[name]['psnr_db']:.1f} dB, {abs(gap):.1f} dB {'below' if gap > 0 else 'above'} the test split.")
    sentence = (f"**Captions.** For {c['nearest_caption_same_image']:.0%} of test captions the nearest other caption "
                f"(cosine) belongs to the same image")
    if c["nearest_caption_same_attributes"] is not None:
        sentence += f", for {c['nearest_caption_same_attributes']:.0%} to an image with the same attributes"
    lines.append(sentence + f"; {c['duplicate_caption_share']:.0%} of test captions are word for word the caption "
                 f"of another test image.")
    if c["similarity_structure"] is not None:
        mc = c["similarity_structure"]["mean_cosine"]
        single = _measured(c["similarity_structure"]["only_this_attribute_differs"])
        weakest, strongest = max(single, key=single.get), min(single, key=single.get)
        lines.append(f"Two captions of the same image are {mc['same image']:.2f} cosine-similar on average, captions of "
                     f"other images with the same attributes {mc['same attributes, other image']:.2f}, and each further "
                     f"differing attribute lowers it ({', '.join(f'{v:.2f}' for g, v in mc.items() if 'differ' in g)} "
                     f"for 1, 2, ... differing). Changing only the {weakest} leaves captions {single[weakest]:.2f} "
                     f"similar, changing only the {strongest} {single[strongest]:.2f}: wording moves the embedding "
                     f"about as much as the {weakest} does.")
    if c["linear_probe_accuracy"] is not None:
        splits = sorted({s for accs in c["linear_probe_accuracy"].values() for s in accs})
        parts = [f"{s}: " + ", ".join(f"{n} {a[s]:.0%}" for n, a in c["linear_probe_accuracy"].items()) for s in splits]
        lines.append(f"A linear probe trained on {PROBE_SPLIT} captions reads the attributes from one caption's "
                     f"embedding with accuracy " + "; ".join(parts) + ".")
    return "\n\n".join(lines)


# --- caption-embedding analyses ----------------------------------------------------------------

def _cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every pair of the (N, k, d) embeddings' N*k captions."""
    return cosine_similarity_matrix(embeddings.reshape(-1, embeddings.shape[-1]))


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
    codes = torch.stack([label_codes([a[name] for a in attributes])[0] for name in names], dim=1)
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
        group = label_codes([str(label) for label in labels])[0][image]
    nearest = sims.argmax(1)
    return float((group[nearest] == group).double().mean())


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

# --- figures ---------------------------------------------------------------------------------

def plot_samples(data: CaptionedImages, indices: list[int], wrap: int = 84):
    """One row per image: the image, then every caption wrapped in full (and the attributes)."""
    import matplotlib.pyplot as plt

    blocks = []
    for index in indices:
        lines = [line for k, c in enumerate(data.captions[index])
                 for line in textwrap.wrap(f"{k + 1}. {c}", wrap, subsequent_indent="   ")]
        if data.attributes is not None:
            lines += textwrap.wrap("attributes: " + ", ".join(f"{k}={v}" for k, v in data.attributes[index].items()), wrap)
        blocks.append(lines)
    heights = [max(1.1, 0.16 * len(lines) + 0.2) for lines in blocks]
    fig, axes = plt.subplots(len(indices), 2, figsize=(11, sum(heights) + 0.5), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 7], "height_ratios": heights})
    for row, (index, lines) in enumerate(zip(indices, blocks)):
        image = data.load_image(index)
        axes[row, 0].imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[row, 0].set_xticks([]), axes[row, 0].set_yticks([])
        axes[row, 0].set_xlabel(data.filenames[index], fontsize=7)
        axes[row, 1].text(0.0, 0.5, "\n".join(lines), va="center", fontsize=8, family="monospace",
                          transform=axes[row, 1].transAxes)
        axes[row, 1].axis("off")
    fig.suptitle(f"{len(indices)} test images with all their captions ({data.image_size}x{data.image_size} pixels)")
    fig.tight_layout()
    return fig


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


def plot_training_curve(info: dict[str, Any]):
    """Per-epoch train and validation MSE of the autoencoder (``info`` from ``train_autoencoder``)
    on a log scale."""
    import matplotlib.pyplot as plt

    history = info["history"]
    title = f"autoencoder training ({info['n_train']} train images, {info['n_val']} validation images)"

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(history["epoch"], history["train_mse"], marker="o", ms=3, label="train (mean over the epoch)")
    if any(v is not None for v in history.get("val_mse", [])):
        ax.plot(history["epoch"], history["val_mse"], marker="s", ms=3, label="validation (end of epoch)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction MSE (pixel values in [0, 1])")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_reconstructions(rows: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """For each named set: a row of originals and a row of their reconstructions, with the
    per-image PSNR in dB above each reconstruction."""
    import matplotlib.pyplot as plt

    n = max(len(orig) for orig, _ in rows.values())
    fig, axes = plt.subplots(2 * len(rows), n, figsize=(1.2 * n, 2.6 * len(rows)), squeeze=False)
    for r, (name, (orig, recon)) in enumerate(rows.items()):
        scores = ae.psnr(recon, orig)
        for c in range(n):
            for k, (img, label) in enumerate([(orig, "original"), (recon, "reconstruction")]):
                ax = axes[2 * r + k, c]
                ax.set_xticks([]), ax.set_yticks([])
                if c < len(img):
                    ax.imshow(img[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                if c == 0:
                    ax.set_ylabel(f"{name}\n{label}", fontsize=8)
                if k == 1 and c < len(img):
                    ax.set_title(f"{float(scores[c]):.1f} dB", fontsize=7)
    fig.suptitle("autoencoder: originals and reconstructions (PSNR per image)")
    fig.tight_layout()
    return fig


def reconstruction_rows(model: ae.ConvAutoencoder, data: Data, features: dict[str, Features], n: int = 10) -> dict:
    """name -> (first n images, their reconstructions) for every split but train."""
    return {name: (x[:n], ae.reconstruct(model, x[:n])) for name, x in held_out_images(data, features).items()}


# --- README ----------------------------------------------------------------------------------

def render_readme(results: Path) -> str:
    r = load_results(results)
    m, c, d = r["metrics"], r["caption_embeddings"], r["data"]
    rows = ["| split | images | captions per image | attribute combinations (in train) | autoencoder PSNR (dB) | SSIM | MSE |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in d["splits"].items():
        combos = f"{row['combinations']} ({row['combinations_in_train']})" if "combinations" in row else "–"
        v = m.get(name)
        scores = f"{v['psnr_db']:.1f} | {v['ssim']:.2f} | {v['mse']:.1e}" if v else "(trained on) | | "
        rows.append(f"| {name} | {row['images']} | {', '.join(map(str, row['captions_per_image']))} | {combos} | {scores} |")
    spare = m["test"]["psnr_db"] - GOAL_PSNR_DB
    text = ["\n".join(rows), "",
            f"The goal, test PSNR >= {GOAL_PSNR_DB:g} dB with a {r['latent_dim']}-number latent, is "
            + (f"met by {spare:.1f} dB." if spare >= 0 else f"missed by {-spare:.1f} dB.")]
    if c.get("similarity_structure"):
        mc = c["similarity_structure"]["mean_cosine"]
        single = _measured(c["similarity_structure"]["only_this_attribute_differs"])
        weakest = max(single, key=single.get)
        text.append(f"Two paraphrases of one image are {mc['same image']:.2f} cosine-similar on average, two captions "
                    f"that differ only in {weakest} {single[weakest]:.2f}.")
    if c.get("linear_probe_accuracy"):
        worst = min((a, n, s) for n, accs in c["linear_probe_accuracy"].items() for s, a in accs.items())
        text.append(f"A linear probe trained on {PROBE_SPLIT} captions reads every attribute from one caption "
                    f"with at least {worst[0]:.0%} accuracy (lowest: {worst[1]} on {worst[2]}).")
    t = r["run"]["timings"]
    text.append("Run time of the committed run: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
                + f" ({threads_text(r)}; autoencoder "
                + ("checkpoint reused" if r["training"]["reused_checkpoint"] else "trained from scratch") + ").")
    return "\n".join(text[:3]) + "\n\n" + " ".join(text[3:])


README_BLOCKS = {"nb02-autoencoder": render_readme}

KEY_NUMBERS = {
    "nb02 test PSNR (dB)": lambda folder: load_results(folder)["metrics"]["test"]["psnr_db"],
    "nb02 test SSIM": lambda folder: load_results(folder)["metrics"]["test"]["ssim"],
    "nb02 nearest caption with the same attributes (share)":
        lambda folder: load_results(folder)["caption_embeddings"]["nearest_caption_same_attributes"],
}

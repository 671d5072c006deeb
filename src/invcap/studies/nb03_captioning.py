"""Notebook 03 (``notebooks/03_captioning.ipynb``): the paper's captioning network f (latent ->
caption embedding, forward MSE only) and what it reaches.

Steps: ``load_splits`` -> ``train`` -> ``evaluate`` -> ``write_results``; figures ``plot_history``
and ``plot_retrieved_captions`` (with ``retrieved_captions``). The results file
``results/captioning.json`` also names the trained network (``network``: config, checkpoint, data),
so notebook 04 and notebook 05 load notebook 03's model with ``load_network_from_results`` instead
of repeating its parameters.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from invcap import features as fe
from invcap.captioning import (CaptioningConfig, CaptioningRun, checkpoint_path, embedding_errors,
                               fit_least_squares, label_mean_predictor, predict, train_captioning)
from invcap.features import Features
from invcap.inn import InvertibleMLP
from invcap.io import read_json, results_dir, write_json_atomic
from invcap.repro import run_record
from invcap.retrieval import attribute_labels, relevance_matrix, retrieval_metrics, top_k
from invcap.studies import nb02_autoencoder
from invcap.studies.common import NotebookParams

__all__ = ["Params", "load_splits", "train", "evaluate", "retrieved_captions", "write_results", "load_results",
           "load_network_from_results", "features_kwargs", "verdicts", "tables", "summary_text", "plot_history",
           "plot_retrieved_captions", "glance_row", "README_BLOCKS", "KEY_NUMBERS", "PAPER_EMBEDDING_ERROR"]

RESULTS = "captioning.json"
PAPER_EMBEDDING_ERROR = 1e-5     # the paper's "error ... in the range of 1e-5"
SPLITS = ("train", "val", "test")
MODELS = ("invertible f", "least squares")


@dataclass(frozen=True)
class Params(NotebookParams):
    seed: int = 0
    dataset: str = "embedded"
    data_root: str | None = None
    image_size: int = 32
    device: str = "auto"
    depth: int = 6
    negative_slope: float = 0.5
    target: str = "sample"       # "sample": one of the image's captions per step; "mean": their mean
    steps: int = 1000
    batch_size: int = 256
    lr: float = 3e-3
    n_show: int = 6

    def data_args(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "root": self.data_root, "image_size": self.image_size, "seed": self.seed}

    def config(self) -> CaptioningConfig:
        return CaptioningConfig(depth=self.depth, negative_slope=self.negative_slope, target=self.target,
                                steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                                device=self.device)


def load_splits(params: Params, folder: Path | None = None, progress: bool = True) -> dict[str, Features]:
    """train / val / test latents and caption embeddings from notebook 02's frozen models (its
    results file names the autoencoder; its caches hold the features, rebuilt if cleared)."""
    kwargs = nb02_autoencoder.features_kwargs(**params.data_args(), folder=folder)
    return {s: fe.load_features(s, **kwargs, device=params.device, progress=progress) for s in SPLITS}


def _checkpoint(name: str, config: CaptioningConfig, train: Features) -> Path:
    return checkpoint_path(name, config, (train.latents, train.caption_embeddings))


def _name(data: dict[str, Any]) -> str:
    return f"captioning-{data['dataset']}{data['image_size']}"


def train(params: Params, splits: dict[str, Features], progress: bool = True) -> CaptioningRun:
    """Train f on the train split (validated on val), resuming or loading its checkpoint."""
    config, tr, val = params.config(), splits["train"], splits["val"]
    path = _checkpoint(_name(params.data_args()), config, tr)
    return train_captioning(tr.latents, tr.caption_embeddings, config, checkpoint=path, progress=progress,
                            val_latents=val.latents, val_embeddings=val.caption_embeddings)


def evaluate(run: CaptioningRun, splits: dict[str, Features]) -> dict[str, Any]:
    """Embedding errors (f, the least-squares baseline and, with attributes, the attribute oracle)
    on train and test, and retrieval on test (VSE++; attribute match where attributes exist)."""
    tr, test = splits["train"], splits["test"]
    ls = fit_least_squares(tr.latents, tr.caption_embeddings)
    predictions = {"train": {"invertible f": predict(run.net, tr.latents), "least squares": ls(tr.latents)},
                   "test": {"invertible f": predict(run.net, test.latents), "least squares": ls(test.latents)}}
    if tr.attributes is not None:
        labels = attribute_labels(tr.attributes)
        for split, f in (("train", tr), ("test", test)):
            predictions[split]["attribute oracle"] = label_mean_predictor(labels, tr.caption_embeddings,
                                                                          attribute_labels(f.attributes))
    errors = {split: {name: embedding_errors(p, splits[split].caption_embeddings) for name, p in preds.items()}
              for split, preds in predictions.items()}
    test_labels = attribute_labels(test.attributes) if test.attributes is not None else None
    retrieval = {name: retrieval_metrics(predictions["test"][name], test.caption_embeddings, labels=test_labels)
                 for name in MODELS}
    first = retrieval["invertible f"]
    return {"embedding_error": errors, "least_squares": ls.describe(),
            "retrieval": {"protocol": first["protocol"], "chance": first["chance"],
                          **{name: {k: r[k] for k in ("i2t", "t2i")} for name, r in retrieval.items()}}}


def retrieved_captions(run: CaptioningRun, test: Features, n_show: int, k: int = 3) -> dict[str, Any]:
    """The first ``n_show`` test images, their k best captions from the whole test bank and
    whether each is relevant (``retrieval.relevance_matrix``: attribute match or exact match)."""
    n, c, d = test.caption_embeddings.shape
    shown = list(range(min(n_show, n)))
    bank = test.caption_embeddings.reshape(n * c, d)
    flat = [caption for caps in test.captions for caption in caps]
    labels = attribute_labels(test.attributes) if test.attributes is not None else None
    relevant = relevance_matrix(torch.arange(n).repeat_interleave(c), n, labels)
    best = top_k(predict(run.net, test.latents[shown]), bank, k=k).tolist()
    return {"images": test.images[shown], "captions": [[flat[j] for j in row] for row in best],
            "correct": [[bool(relevant[i, j]) for j in row] for i, row in zip(shown, best)],
            "truth": [test.captions[i][0] for i in shown]}


def write_results(params: Params, run: CaptioningRun, splits: dict[str, Features], evaluation: dict[str, Any],
                  timings: dict[str, float]) -> dict[str, Any]:
    """``results_dir()/captioning.json``; returns what it wrote."""
    tr = splits["train"]
    history = run.history
    last = history["mse"][-100:]
    results = {
        "run": run_record(params.as_dict(), params.seed, run.device, data=tr.info["data_key"], timings=timings),
        "network": {"config": run.config.as_dict(), "checkpoint": str(run.checkpoint), "data": params.data_args(),
                    "features": {k: (list(v) if isinstance(v, tuple) else v)
                                 for k, v in nb02_autoencoder.features_kwargs(**params.data_args()).items()}},
        "target": ("one of the image's captions drawn uniformly per step (the MSE minimiser is their mean)"
                   if params.target == "sample" else "the mean of the image's caption embeddings"),
        "n_images": {split: len(f) for split, f in splits.items()},
        "paper_embedding_error": PAPER_EMBEDDING_ERROR,
        **evaluation,
        "training": {"steps": run.steps_done, "resumed_from": run.resumed_from,
                     "final_train_mse_mean_of_last_100": sum(last) / len(last),
                     "final_val_mse": history["val_mse"][-1] if history["val_mse"] else None,
                     "history": {k: history[k] for k in ("val_step", "val_mse")}},
    }
    write_json_atomic(results_dir() / RESULTS, results)
    return results


def load_results(folder: Path | None = None) -> dict[str, Any]:
    return read_json((folder or results_dir()) / RESULTS, "notebooks/03_captioning.ipynb")


def load_network_from_results(folder: Path | None = None, device: str = "auto",
                              progress: bool = True) -> tuple[InvertibleMLP, dict[str, Any]]:
    """Notebook 03's trained network, named by its results file: loaded from the checkpoint it
    records, or retrained from the recorded config and data when the cache was cleared (the same
    key: the same weights on the same machine). A FileNotFoundError when notebook 03 has not
    run; a ValueError when the training code or data changed since (rerun notebook 03)."""
    results = load_results(folder)
    record = results["network"]
    config = CaptioningConfig(**{**record["config"], "device": device})
    train_split = fe.load_features("train", **features_kwargs(results), device=device, progress=progress)
    path = _checkpoint(_name(record["data"]), config, train_split)
    if path.name != Path(record["checkpoint"]).name:
        raise ValueError(f"notebook 03's results name the network {Path(record['checkpoint']).name}, but its "
                         f"config, data and training code now give {path.name}: the code or data changed "
                         f"since notebook 03 ran; rerun notebooks/03_captioning.ipynb")
    run = train_captioning(train_split.latents, train_split.caption_embeddings, config, checkpoint=path,
                           progress=progress)
    return run.net, results


def features_kwargs(results: dict[str, Any]) -> dict[str, Any]:
    """``load_features`` keyword arguments of the features notebook 03's network was trained on."""
    kwargs = dict(results["network"]["features"])
    kwargs["widths"] = tuple(kwargs["widths"])
    return kwargs


# --- what the notebook prints ----------------------------------------------------------------

def _band(label: str, value: float, low: float, high: float, unit: str = "") -> str:
    return f"{label} between {low:g} and {high:g}{unit}: {low <= value <= high}"


def verdicts(results: dict[str, Any], part: str) -> str:
    """The checked cells' text (``part``: "data", "errors" or "retrieval"): bands and verdicts."""
    lines: list[str] = []
    if part == "data":
        for split, n in results["n_images"].items():
            lines.append(f"{split}: {n} images")
    elif part == "errors":
        e = results["embedding_error"]["test"]
        f, paper = e["invertible f"], PAPER_EMBEDDING_ERROR
        lines.append(f"test MSE of f to the mean caption at least 3x the paper's {paper:g}: "
                     f"{f['mse_mean_caption'] >= 3 * paper}")
        lines.append(f"the captions' own spread around their mean exceeds the paper's {paper:g} tenfold: "
                     f"{f['caption_spread_mse'] >= 10 * paper}")
        lines.append(f"MSE to one caption = MSE to the mean caption + caption spread (within 1%): "
                     f"{abs(f['mse_per_caption'] - f['mse_mean_caption'] - f['caption_spread_mse']) < 0.01 * f['mse_per_caption']}")
        if "attribute oracle" in e:
            lines.append(_band("test MSE of f over the attribute oracle's", f["mse_mean_caption"]
                               / e["attribute oracle"]["mse_mean_caption"], 1.0, 2.0, "x"))
    elif part == "retrieval":
        r, chance = results["retrieval"]["invertible f"], results["retrieval"]["chance"]
        lines.append(f"protocol: {results['retrieval']['protocol']}")
        lines.append(f"R@1 of f at least 10x chance in both directions: "
                     f"{r['i2t']['R@1'] >= 10 * chance['i2t_R@1'] and r['t2i']['R@1'] >= 10 * chance['t2i_R@1']}")
        lines.append(_band("image->text R@1 of f", r["i2t"]["R@1"], 20, 60, " %"))
        lines.append(_band("text->image R@1 of f", r["t2i"]["R@1"], 20, 60, " %"))
    else:
        raise ValueError(f"part must be 'data', 'errors' or 'retrieval', got {part!r}")
    return "\n".join(lines)


def tables(results: dict[str, Any], part: str) -> str:
    """Exact numbers (printed under NBVAL_IGNORE_OUTPUT): "errors" or "retrieval"."""
    lines: list[str] = []
    if part == "errors":
        lines.append(f"least squares baseline: {results['least_squares']}")
        lines.append(f"{'split':6s} {'model':17s} {'MSE to mean caption':>20s} {'MSE to one caption':>19s} "
                     f"{'cosine (one caption)':>21s}")
        for split, rows in results["embedding_error"].items():
            for name, e in rows.items():
                lines.append(f"{split:6s} {name:17s} {e['mse_mean_caption']:20.2e} {e['mse_per_caption']:19.2e} "
                             f"{e['cosine_per_caption']:21.3f}")
        spread = results["embedding_error"]["test"]["invertible f"]["caption_spread_mse"]
        lines.append(f"caption spread around the mean (the floor of 'MSE to one caption'): {spread:.2e}")
    elif part == "retrieval":
        r = results["retrieval"]
        lines.append(f"{'model':14s} {'direction':10s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'median rank':>12s}")
        for name in MODELS:
            for direction in ("i2t", "t2i"):
                m = r[name][direction]
                lines.append(f"{name:14s} {direction:10s} {m['R@1']:6.1f} {m['R@5']:6.1f} {m['R@10']:6.1f} "
                             f"{m['median_rank']:12.0f}")
        lines.append(f"chance R@1: image->text {r['chance']['i2t_R@1']:.2f}, text->image {r['chance']['t2i_R@1']:.2f}")
    else:
        raise ValueError(f"part must be 'errors' or 'retrieval', got {part!r}")
    return "\n".join(lines)


def summary_text(results: dict[str, Any]) -> str:
    """The closing narrative (plain text bullets), every number from ``results``."""
    e, paper = results["embedding_error"], results["paper_embedding_error"]
    f, f_train = e["test"]["invertible f"], e["train"]["invertible f"]
    r, chance = results["retrieval"], results["retrieval"]["chance"]
    lines = [f"- Test MSE of f to one caption: {f['mse_per_caption']:.2e}, {f['mse_per_caption'] / paper:.0f}x the "
             f"paper's {paper:g}; to the mean caption: {f['mse_mean_caption']:.2e} "
             f"({f['mse_mean_caption'] / paper:.0f}x). On the train split: {f_train['mse_per_caption']:.2e} / "
             f"{f_train['mse_mean_caption']:.2e}."]
    if "attribute oracle" in e["test"]:
        o = e["test"]["attribute oracle"]
        lines.append(f"- The attribute oracle (the mean caption of the training images with the same attributes) has "
                     f"test MSE {o['mse_mean_caption']:.2e} to the mean caption: the captions' wording alone keeps any "
                     f"predictor {o['mse_mean_caption'] / paper:.0f}x above {paper:g} here; f is "
                     f"{f['mse_mean_caption'] / o['mse_mean_caption']:.2f}x the oracle.")
    lines.append(f"- The paper's {paper:g} is {f['caption_spread_mse'] / paper:.0f}x below the spread of the captions "
                 f"around their mean ({f['caption_spread_mse']:.1e}): against held-out captions no predictor gets "
                 f"there; 1e-5 is only possible against a target without that spread (one fixed caption per "
                 f"training image, memorised).")
    ls = e["test"]["least squares"]
    relative = f["mse_mean_caption"] / ls["mse_mean_caption"] - 1
    lines.append(f"- Against least squares ({results['least_squares']}), f's test MSE to the mean caption is "
                 f"{abs(relative) * 100:.0f}% {'lower' if relative < 0 else 'higher'}; image->text R@1 "
                 f"{r['invertible f']['i2t']['R@1']:.0f}% vs {r['least squares']['i2t']['R@1']:.0f}%, text->image "
                 f"{r['invertible f']['t2i']['R@1']:.0f}% vs {r['least squares']['t2i']['R@1']:.0f}% (chance "
                 f"{chance['i2t_R@1']:.1f}% / {chance['t2i_R@1']:.1f}%, {r['protocol']}).")
    return "\n".join(lines)


# --- figures ---------------------------------------------------------------------------------

def plot_history(history: dict[str, list[float]], evaluation: dict[str, Any] | None = None, smooth: int = 50):
    """Two panels, because the two losses have different targets: left, the training loss (MSE
    of a batch to ONE randomly drawn caption per image, floored by the train captions' spread
    around their mean, from ``evaluation``); right, the validation MSE to each image's MEAN
    caption. Log axes, MSE per coordinate."""
    import matplotlib.pyplot as plt

    spread = (evaluation["embedding_error"]["train"]["invertible f"]["caption_spread_mse"]
              if evaluation is not None else None)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    mse = torch.tensor(history["mse"], dtype=torch.float64)
    steps = torch.arange(1, len(mse) + 1)
    left.plot(steps, mse, color="tab:blue", alpha=0.25, lw=0.6, label="one batch")
    if len(mse) >= smooth:
        running = torch.nn.functional.avg_pool1d(mse[None, None], smooth, stride=1)[0, 0]
        left.plot(steps[smooth - 1:], running, color="tab:blue", lw=1.5, label=f"{smooth}-step running mean")
    if spread is not None:
        left.axhline(spread, color="gray", ls="--", lw=1, label="caption spread around the mean (floor)")
    left.set_title("training loss: MSE to one sampled caption")
    if history.get("val_step"):
        right.plot(history["val_step"], history["val_mse"], "o-", color="tab:orange", ms=3)
    right.set_title("validation: MSE to the image's mean caption")
    for ax in (left, right):
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("MSE per coordinate (embedding units²)")
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_retrieved_captions(shown: dict[str, Any], width: int = 96):
    """One row per test image: the image and its retrieved captions (best first, marked ok or
    wrong), each wrapped in full."""
    import matplotlib.pyplot as plt

    blocks = []
    for truth, captions, correct in zip(shown["truth"], shown["captions"], shown["correct"]):
        lines = textwrap.wrap("true: " + truth, width, subsequent_indent="      ")
        for rank, (caption, ok) in enumerate(zip(captions, correct), 1):
            lines += textwrap.wrap(f"{rank}. [{'ok' if ok else 'wrong'}] {caption}", width, subsequent_indent="      ")
        blocks.append(lines)
    heights = [max(0.9, 0.16 * len(b) + 0.15) for b in blocks]
    fig, axes = plt.subplots(len(blocks), 2, figsize=(11, sum(heights) + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 8], "height_ratios": heights})
    for i, lines in enumerate(blocks):
        axes[i, 0].imshow(shown["images"][i].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[i, 0].axis("off")
        axes[i, 1].text(0, 0.5, "\n".join(lines), va="center", fontsize=8, family="monospace",
                        transform=axes[i, 1].transAxes)
        axes[i, 1].axis("off")
    fig.suptitle("captions retrieved for test images by f(z) (whole test caption bank)")
    fig.tight_layout()
    return fig


# --- README ----------------------------------------------------------------------------------

def render_readme(folder: Path) -> str:
    r = load_results(folder)
    e, ret, paper = r["embedding_error"]["test"], r["retrieval"], r["paper_embedding_error"]
    rows = ["| test split | MSE to mean caption | MSE to one caption | image→text R@1 / R@5 (%) | text→image R@1 / R@5 (%) |",
            "|---|---|---|---|---|"]
    for name, err in e.items():
        rt = ret.get(name)
        cells = (f"{rt['i2t']['R@1']:.1f} / {rt['i2t']['R@5']:.1f} | {rt['t2i']['R@1']:.1f} / {rt['t2i']['R@5']:.1f}"
                 if rt else "– | –")
        rows.append(f"| {name} | {err['mse_mean_caption']:.2e} | {err['mse_per_caption']:.2e} | {cells} |")
    f = e["invertible f"]
    t = r["run"]["timings"]
    cfg = r["network"]["config"]
    notes = [f"Protocol: {ret['protocol']}; chance R@1 {ret['chance']['i2t_R@1']:.1f} % (image→text) / "
             f"{ret['chance']['t2i_R@1']:.1f} % (text→image). Least squares: {r['least_squares']}.",
             f"f: depth {cfg['depth']}, {cfg['steps']} steps of batch {cfg['batch_size']}, lr {cfg['lr']:g}; "
             f"test MSE to the mean caption {f['mse_mean_caption'] / paper:.0f}x the paper's {paper:g}, caption "
             f"spread {f['caption_spread_mse']:.1e} ({f['caption_spread_mse'] / paper:.0f}x {paper:g}).",
             "Run time: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
             + f" ({nb02_autoencoder.threads_text(r)}, " + (f"training resumed from step {r['training']['resumed_from']}"
                                                  if r["training"]["resumed_from"] else "trained from scratch") + ")."]
    return "\n".join(rows) + "\n\n" + " ".join(notes)


def glance_row(folder: Path) -> str:
    """The README overview's row (``invcap.studies.overview``): finding 1, with the verdicts of the
    checked cells (error at least 3x the paper's: not reached; R@1 at least 10x chance: retrieval works)."""
    r = load_results(folder)
    f, ret, paper = r["embedding_error"]["test"]["invertible f"], r["retrieval"], r["paper_embedding_error"]
    i2t, t2i = ret["invertible f"]["i2t"]["R@1"], ret["invertible f"]["t2i"]["R@1"]
    retrieves = i2t >= 10 * ret["chance"]["i2t_R@1"] and t2i >= 10 * ret["chance"]["t2i_R@1"]
    reached = f["mse_mean_caption"] < 3 * paper
    return (f"| (1) captioning works, embedding error in the range of {paper:g} | test MSE to the mean caption "
            f"{f['mse_mean_caption']:.1e} ({f['mse_mean_caption'] / paper:.0f}x; the captions' own spread "
            f"{f['caption_spread_mse']:.1e}); R@1 image→text {i2t:.0f} %, text→image {t2i:.0f} % (chance "
            f"{ret['chance']['i2t_R@1']:.1f} %) | retrieval **{'confirmed' if retrieves else 'not confirmed'}**; "
            f"the {paper:g} error **{'reached' if reached else 'not reached'}** on held-out captions |")


README_BLOCKS = {"nb03-captioning": render_readme}

KEY_NUMBERS = {
    "nb03 image->text R@1 (%)": lambda folder: load_results(folder)["retrieval"]["invertible f"]["i2t"]["R@1"],
    "nb03 text->image R@1 (%)": lambda folder: load_results(folder)["retrieval"]["invertible f"]["t2i"]["R@1"],
    "nb03 test MSE to the mean caption":
        lambda folder: load_results(folder)["embedding_error"]["test"]["invertible f"]["mse_mean_caption"],
}

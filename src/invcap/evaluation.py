"""Judging images generated from captions (notebook 05).

- The attribute judge (``AttributeJudge``, ``JudgeConfig``, ``load_or_train_judge``,
  ``judge_accuracy``, ...) lives in ``invcap.judge`` and is re-exported here.
- ``r_precision``: AttnGAN-style. For every generated image, its (re-encoded, captioned)
  embedding ranks its own caption against ``candidates - 1`` captions of *other* attribute
  combinations; R-precision is the percentage ranked first.
- ``pairwise_diversity``: mean RMS pixel distance between the images generated for one caption.
"""

from __future__ import annotations

from typing import Callable, Hashable, Mapping, Sequence

import torch

from invcap.inversion import finite_mask
# The judge moved to invcap.judge; re-exported here until evaluation.py is reworked (helper "gap").
from invcap.judge import (AttributeJudge, JudgeConfig, _blur, augment, encode_labels,  # noqa: F401
                          judge_accuracy, judge_training_set, load_or_train_judge, train_judge)
from invcap.retrieval import attribute_labels, cosine_similarity_matrix, retrieval_metrics

__all__ = ["AttributeJudge", "JudgeConfig", "encode_labels", "judge_training_set", "augment", "train_judge",
           "load_or_train_judge", "judge_accuracy", "r_precision", "pairwise_diversity", "reference_diversity",
           "decode_latents", "generate_split", "score_generated", "evaluate_method", "ABLATION_COLUMNS",
           "inverse_retrieval", "seed_study", "summarize_seeds", "SEED_COLUMNS", "GOAL_ALL_CORRECT",
           "GOAL_R1_BELOW_PAPER", "goal_thresholds", "image_captioner",
           "plot_generation_grid", "plot_samples", "plot_ablation", "plot_seeds"]

# --- retrieval-based and diversity scores ---------------------------------------------------

def r_precision(query_embeddings: torch.Tensor, caption_embeddings: torch.Tensor, labels: Sequence[Hashable],
                candidates: int = 100, seed: int = 0) -> float:
    """R-precision in percent.

    query_embeddings[i]: the captioning model's embedding of generated image i;
    caption_embeddings[i]: the caption image i was generated from; labels[i]: its attribute
    combination. Each query ranks its caption against ``candidates - 1`` captions drawn (without
    replacement, seeded) from rows with a *different* label, by cosine similarity; a hit is a
    strictly higher score for its own caption (a tie is a miss, so a degenerate query cannot score).
    Non-finite queries are misses.
    """
    n = query_embeddings.shape[0]
    if caption_embeddings.shape != query_embeddings.shape or query_embeddings.dim() != 2:
        raise ValueError(f"query_embeddings {tuple(query_embeddings.shape)} and caption_embeddings "
                         f"{tuple(caption_embeddings.shape)} must both be (N, d)")
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} queries")
    if candidates < 2:
        raise ValueError(f"candidates must be >= 2, got {candidates}")
    codes: dict[Hashable, int] = {}
    code = torch.tensor([codes.setdefault(label, len(codes)) for label in labels])
    gen = torch.Generator().manual_seed(seed)
    finite = torch.isfinite(query_embeddings).all(dim=1)
    queries = torch.nan_to_num(query_embeddings.double(), nan=0.0, posinf=0.0, neginf=0.0)
    sims = cosine_similarity_matrix(queries, caption_embeddings.double())   # (N, N)
    hits = 0
    for i in range(n):
        pool = (code != code[i]).nonzero().flatten()
        if pool.numel() < candidates - 1:
            raise ValueError(f"query {i} has only {pool.numel()} captions of other attribute combinations; "
                             f"R-precision needs {candidates - 1} (lower `candidates` or add captions)")
        negatives = pool[torch.randperm(pool.numel(), generator=gen)[:candidates - 1]]
        hits += int(bool(finite[i]) and bool(sims[i, i] > sims[i, negatives].max()))
    return 100.0 * hits / n


def pairwise_diversity(samples: torch.Tensor) -> float:
    """Mean RMS pixel distance between the S images generated for each caption, averaged over
    pairs and captions. samples: (N, S, C, H, W) with S >= 2, pixels clamped to [0, 1]."""
    if samples.dim() != 5 or samples.shape[1] < 2:
        raise ValueError(f"samples must be (N, S, C, H, W) with S >= 2 samples per caption, got {tuple(samples.shape)}")
    flat = samples.double().clamp(0, 1).flatten(2)                         # (N, S, P)
    s = samples.shape[1]
    first, second = torch.triu_indices(s, s, offset=1)
    rms = (flat[:, first] - flat[:, second]).pow(2).mean(dim=2).sqrt()     # (N, pairs)
    return float(rms.mean())


# --- scoring a method on one split ---------------------------------------------------------

@torch.no_grad()
def decode_latents(decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor,
                   batch_size: int = 1024) -> torch.Tensor:
    """decode((M, d)) in batches -> (M, 3, H, W) on CPU, not clamped."""
    return torch.cat([decode(chunk).float().cpu() for chunk in latents.split(batch_size)])


@torch.no_grad()
def generate_split(trained, caption_embeddings: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor],
                   samples: int = 1, seed: int = 0) -> torch.Tensor:
    """Images for every caption: caption_embeddings (N, C, d) -> (N, C, samples, 3, H, W), via
    ``trained.invert`` (a ``TrainedMethod``) and ``decode``."""
    if caption_embeddings.dim() != 3:
        raise ValueError(f"caption_embeddings must be (N, C, d), got {tuple(caption_embeddings.shape)}")
    n, c, d = caption_embeddings.shape
    latents = trained.invert(caption_embeddings.reshape(n * c, d), samples=samples, seed=seed)
    images = decode_latents(decode, latents.reshape(n * c * samples, d))
    return images.reshape(n, c, samples, *images.shape[1:])


@torch.no_grad()
def score_generated(images: torch.Tensor, caption_embeddings: torch.Tensor,
                    attribute_dicts: Sequence[Mapping[str, str]], judge: AttributeJudge,
                    caption_images: Callable[[torch.Tensor], torch.Tensor], candidates: int = 100,
                    seed: int = 0) -> dict:
    """Judge and R-precision for images generated from captions.

    images (N, C, S, 3, H, W) from ``generate_split``; caption_embeddings (N, C, d); the judge
    scores every image against its source image's attributes; ``caption_images`` maps images to
    caption embeddings (the reference captioning model on the re-encoded image) for R-precision,
    computed on the first sample of every caption. Diversity is over the S samples, when S > 1."""
    n, c, s = images.shape[:3]
    if caption_embeddings.shape[:2] != (n, c) or len(attribute_dicts) != n:
        raise ValueError(f"images {tuple(images.shape[:3])}, caption_embeddings {tuple(caption_embeddings.shape[:2])} "
                         f"and {len(attribute_dicts)} attribute dicts do not describe the same images")
    owners = [attribute_dicts[i] for i in range(n) for _ in range(c * s)]
    flat = images.reshape(n * c * s, *images.shape[3:])
    out: dict = {"judge": judge_accuracy(judge, flat, owners), "n_images": int(flat.shape[0]),
                 "n_nonfinite": int((~finite_mask(flat)).sum())}
    first = images[:, :, 0].reshape(n * c, *images.shape[3:])
    clean = torch.nan_to_num(first, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    queries = caption_images(clean)
    labels = [label for label in attribute_labels(attribute_dicts) for _ in range(c)]
    out["r_precision"] = r_precision(queries, caption_embeddings.reshape(n * c, -1), labels, candidates, seed)
    out["diversity"] = pairwise_diversity(images.reshape(n * c, s, *images.shape[3:])) if s > 1 else float("nan")
    return out


def reference_diversity(images: torch.Tensor, attribute_dicts: Sequence[Mapping[str, str]]) -> float:
    """``pairwise_diversity`` of *real* images that share an attribute combination: how much the
    data itself varies for one description (the scale against which sampled diversity reads)."""
    groups: dict[tuple, list[int]] = {}
    for i, label in enumerate(attribute_labels(attribute_dicts)):
        groups.setdefault(label, []).append(i)
    sizes = sorted({len(v) for v in groups.values() if len(v) >= 2})
    if not sizes:
        raise ValueError("no attribute combination has two images")
    s = sizes[0]   # equal group sizes so one (N, S, ...) tensor holds them
    chosen = [v[:s] for v in groups.values() if len(v) >= s]
    return pairwise_diversity(torch.stack([images[idx] for idx in chosen]))


ABLATION_COLUMNS = ("method", "captioning_r1", "captioning_r1_inverse", "forward_mse", "attribute_acc_seen",
                    "attribute_acc_unseen", "all_correct_seen", "all_correct_unseen", "r_precision_seen", "r_precision_unseen", "diversity")


@torch.no_grad()
def inverse_retrieval(trained, split, seed: int = 0) -> dict[str, dict[str, float]]:
    """Image -> text retrieval with the same network run backwards: every caption of the bank is
    inverted, f^-1(y) (as the method generates: projected, or with z drawn for latent padding),
    and each image ranks the captions by cosine similarity between its own latent and theirs, both
    centred on the mean image latent of ``split``. Same protocol and output as
    ``retrieval_metrics`` (attribute match when ``split.attributes`` is set). It tells whether
    a network that captions poorly forwards still places captions next to their images backwards."""
    n, c, d = split.caption_embeddings.shape
    inverted = trained.invert(split.caption_embeddings.reshape(n * c, d), samples=1, seed=seed)[:, 0]
    if not bool(torch.isfinite(inverted).all()):
        raise ValueError(f"{trained.method.name}: f^-1 of {int((~torch.isfinite(inverted)).any(dim=1).sum())} "
                         "captions is not finite; inverse-direction retrieval is undefined")
    latents = trained.project(split.latents.float())
    centre = latents.mean(dim=0)
    labels = attribute_labels(split.attributes) if split.attributes is not None else None
    return retrieval_metrics(latents - centre, inverted.reshape(n, c, -1) - centre, labels=labels)


@torch.no_grad()
def evaluate_method(trained, seen, unseen, judge: AttributeJudge, decode: Callable[[torch.Tensor], torch.Tensor],
                    caption_images: Callable[[torch.Tensor], torch.Tensor], samples: int = 4, seed: int = 0,
                    candidates: int = 100) -> tuple[dict, dict]:
    """One ablation row (``ABLATION_COLUMNS``) and its details for a ``TrainedMethod``.

    seen / unseen: ``Features`` of the test split and of the compositional split (attribute
    combinations never trained on). Captioning: image -> text R@1 (attribute match, percent) and
    MSE to the mean caption on ``seen``; beside it the same R@1 with the network run backwards
    (``inverse_retrieval``). Generation: one image from every caption of both splits,
    judged per attribute; R-precision with ``caption_images`` (the reference captioning model on
    re-encoded images); diversity of ``samples`` images from each seen image's first caption
    (NaN for methods that cannot sample)."""
    pred = trained.caption(seen.latents)
    retrieval = retrieval_metrics(pred, seen.caption_embeddings, labels=attribute_labels(seen.attributes))
    mse = float(((pred.double() - seen.caption_embeddings.double().mean(dim=1)) ** 2).mean())
    backwards = inverse_retrieval(trained, seen, seed)
    row = {"method": trained.method.name, "captioning_r1": retrieval["i2t"]["R@1"],
           "captioning_r1_inverse": backwards["i2t"]["R@1"], "forward_mse": mse}
    details: dict = {"retrieval": {k: retrieval[k] for k in ("i2t", "t2i")},
                     "retrieval_inverse": {k: backwards[k] for k in ("i2t", "t2i")}}
    for tag, split in (("seen", seen), ("unseen", unseen)):
        images = generate_split(trained, split.caption_embeddings, decode, samples=1, seed=seed)
        scores = score_generated(images, split.caption_embeddings, split.attributes, judge, caption_images,
                                 candidates, seed)
        per_attribute = [v for k, v in scores["judge"].items() if k != "all"]
        row[f"attribute_acc_{tag}"] = sum(per_attribute) / len(per_attribute)
        row[f"all_correct_{tag}"] = scores["judge"]["all"]
        row[f"r_precision_{tag}"] = scores["r_precision"]
        details[tag] = {"judge": scores["judge"], "n_images": scores["n_images"], "n_nonfinite": scores["n_nonfinite"]}
    row["diversity"] = float("nan")
    if trained.method.samples and samples > 1:
        many = generate_split(trained, seen.caption_embeddings[:, :1], decode, samples=samples, seed=seed)
        row["diversity"] = pairwise_diversity(many[:, 0])
    return row, details


# Notebook 05's goal (issue 6): all-attributes-correct rates (percent) the best method must reach, and
# how many points of captioning R@1 it may lose against the paper baseline.
GOAL_ALL_CORRECT = {"all_correct_seen": 95.0, "all_correct_unseen": 85.0}
GOAL_R1_BELOW_PAPER = 5.0


def goal_thresholds(paper_r1: float) -> dict[str, float]:
    """Ablation column -> the minimum the goal asks of it, given the paper baseline's captioning R@1."""
    return {**GOAL_ALL_CORRECT, "captioning_r1": paper_r1 - GOAL_R1_BELOW_PAPER}


def image_captioner(reference, encode: Callable[[torch.Tensor], torch.Tensor],
                    batch_size: int = 1024) -> Callable[[torch.Tensor], torch.Tensor]:
    """images -> caption embeddings predicted by ``reference`` (a ``TrainedMethod``) from the images'
    latents under ``encode``: how R-precision reads a generated image (``evaluate_method``)."""
    return lambda images: reference.caption(torch.cat([encode(b) for b in images.split(batch_size)]))


SEED_COLUMNS = ("method", "seed", "captioning_r1", "all_correct_seen", "all_correct_unseen")


def seed_study(names: Sequence[str], seeds: Sequence[int], train, seen, unseen, judge: AttributeJudge,
               decode: Callable[[torch.Tensor], torch.Tensor], caption_images: Callable[[torch.Tensor], torch.Tensor],
               progress: bool = True, **config_overrides) -> list[dict]:
    """Train every method of ``names`` once per training seed (``train_method``, cached, so a seed
    that notebook 05 already trained is loaded, not retrained) and evaluate it as
    ``evaluate_method`` does. Only the training seed changes: data, judge and evaluation are fixed,
    so the spread is what the training seed alone moves the numbers. One row (``SEED_COLUMNS``)
    per (method, seed)."""
    from invcap.methods import train_method

    if not names or not seeds:
        raise ValueError("seed_study needs at least one method name and one seed")
    pairs = [(name, int(seed)) for name in names for seed in seeds]
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="seed study")
    rows = []
    for name, seed in pairs:
        trained = train_method(name, train.latents, train.caption_embeddings, progress=False,
                               **{**config_overrides, "seed": seed})
        with torch.no_grad():
            row, _ = evaluate_method(trained, seen, unseen, judge, decode, caption_images, samples=1, seed=0)
        rows.append({"method": name, "seed": seed, **{k: row[k] for k in SEED_COLUMNS[2:]}})
    return rows


def summarize_seeds(rows: Sequence[Mapping[str, float]], thresholds: Mapping[str, float]) -> list[dict]:
    """Per method: mean, sample standard deviation (0 for one seed), min and max of every metric of
    ``rows`` (``seed_study``), and in how many seeds each metric reaches its threshold
    (``thresholds``: column -> minimum)."""
    out = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        summary: dict = {"method": name, "seeds": len(mine)}
        for column in SEED_COLUMNS[2:]:
            values = torch.tensor([float(r[column]) for r in mine], dtype=torch.float64)
            summary[f"{column}_mean"] = float(values.mean())
            summary[f"{column}_std"] = float(values.std()) if len(mine) > 1 else 0.0
            summary[f"{column}_min"], summary[f"{column}_max"] = float(values.min()), float(values.max())
            if column in thresholds:
                summary[f"{column}_seeds_meeting"] = int((values >= thresholds[column]).sum())
        out.append(summary)
    return out


# --- figures -------------------------------------------------------------------------------

def _wrap(text: str, width: int = 22) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _method_label(name: str) -> str:
    """A method name on several lines, broken before each '+' (never inside a word)."""
    return name.replace("+", "\n+")


def plot_generation_grid(real: torch.Tensor, captions: Sequence[str], rows: Mapping[str, torch.Tensor],
                         correct: Mapping[str, Sequence[bool]] | None = None, groups: Sequence[str] | None = None):
    """Caption -> image grid: the first row shows a real image each caption was written for,
    then one row per method (images (K, 3, H, W)); a green/red frame marks the judge's verdict
    (all attributes right or not); ``groups`` labels each column (e.g. "seen"/"unseen")."""
    import matplotlib.pyplot as plt

    k = len(captions)
    names = ["real image"] + list(rows)
    fig, axes = plt.subplots(len(names), k, figsize=(1.45 * k + 1.2, 1.45 * len(names) + 1.0), squeeze=False)
    for r, name in enumerate(names):
        images = real if r == 0 else rows[name]
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(torch.nan_to_num(images[c].float()).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r > 0 and correct is not None:
                colour = "tab:green" if correct[name][c] else "tab:red"
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2.5)
            if r == 0:
                head = f"[{groups[c]}]\n" if groups is not None else ""
                ax.set_title(head + _wrap(captions[c]), fontsize=6)
            if c == 0:
                ax.set_ylabel(_method_label(name), fontsize=7)
    fig.suptitle("images generated by inverting real caption embeddings (frame: judge says all attributes right "
                 "= green, else red)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_samples(real: torch.Tensor, captions: Sequence[str], samples: torch.Tensor, method_name: str):
    """Several samples per caption (samples: (K, S, 3, H, W)) beside a real image of the caption."""
    import matplotlib.pyplot as plt

    k, s = samples.shape[:2]
    fig, axes = plt.subplots(k, s + 1, figsize=(1.3 * (s + 1) + 2.2, 1.35 * k + 0.6), squeeze=False)
    for i in range(k):
        for j in range(s + 1):
            image = real[i] if j == 0 else samples[i, j - 1]
            axes[i, j].imshow(image.float().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title("real" if j == 0 else f"sample {j}", fontsize=7)
        axes[i, 0].set_ylabel(_wrap(captions[i], 24), fontsize=6)
    fig.suptitle(f"{method_name}: one caption, latent z ~ N(0, I) drawn {s} times", fontsize=8)
    fig.tight_layout()
    return fig


def plot_ablation(rows: Sequence[Mapping[str, float]], paper_r1: float):
    """Left: all-attributes-correct rate (percent) on seen and unseen combinations per method, with
    notebook 05's goals (``GOAL_ALL_CORRECT``) dashed. Right: captioning R@1 (percent) per method through f
    (forward) and, where the rows have it, through f^-1 (``inverse_retrieval``), with the paper
    baseline's forward level."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["method"] for r in rows]
    x = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(11.0, 1.7 * len(names)), 4.8))
    left.bar(x - 0.2, [r["all_correct_seen"] for r in rows], 0.4, label="seen combinations (test)")
    left.bar(x + 0.2, [r["all_correct_unseen"] for r in rows], 0.4, label="unseen combinations (compositional)")
    for column, colour, tag in (("all_correct_seen", "tab:blue", "seen"), ("all_correct_unseen", "tab:orange", "unseen")):
        left.axhline(GOAL_ALL_CORRECT[column], color=colour, ls="--", lw=1,
                     label=f"goal, {tag} ({GOAL_ALL_CORRECT[column]:.0f})")
    left.set_ylabel("all attributes correct (%)")
    left.set_ylim(0, 100)
    left.set_title("text -> image: judged generated images")
    backwards = all("captioning_r1_inverse" in r for r in rows)
    width = 0.4 if backwards else 0.5
    right.bar(x - (0.2 if backwards else 0), [r["captioning_r1"] for r in rows], width, color="tab:gray",
              label="through f (forward, captioning)")
    if backwards:
        right.bar(x + 0.2, [r["captioning_r1_inverse"] for r in rows], width, color="tab:olive",
                  label="through f⁻¹ (captions inverted to latents)")
    right.axhline(paper_r1, color="k", ls="--", lw=1, label=f"paper baseline ({paper_r1:.1f})")
    right.axhline(paper_r1 - GOAL_R1_BELOW_PAPER, color="tab:red", ls=":", lw=1,
                  label=f"{GOAL_R1_BELOW_PAPER:.0f} points below")
    right.set_ylabel("image -> text R@1 (%)")
    right.set_ylim(0, 100)
    right.set_title("image -> text: captioning retrieval")
    for ax in (left, right):
        ax.set_xticks(x)
        ax.set_xticklabels([_method_label(n) for n in names], fontsize=7)
        ax.set_xlabel("method")
        # below the axes, so that no bar is hidden
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def plot_seeds(rows: Sequence[Mapping[str, float]], thresholds: Mapping[str, float]):
    """One panel per metric of ``seed_study`` rows: every (method, seed) as a dot, the mean as a
    bar, the goal's threshold as a dashed line."""
    import matplotlib.pyplot as plt

    columns = [("all_correct_seen", "seen combinations: all correct (%)"),
               ("all_correct_unseen", "unseen combinations: all correct (%)"),
               ("captioning_r1", "captioning R@1 through f (%)")]
    names = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.8))
    for ax, (column, label) in zip(axes, columns):
        for i, name in enumerate(names):
            values = [float(r[column]) for r in rows if r["method"] == name]
            ax.bar(i, sum(values) / len(values), 0.6, color="tab:blue", alpha=0.3)
            ax.scatter([i] * len(values), values, color="tab:blue", zorder=3, s=18)
        if column in thresholds:
            ax.axhline(thresholds[column], color="tab:red", ls="--", lw=1, label=f"goal ({thresholds[column]:.1f})")
            ax.legend(fontsize=7, loc="center right")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([_method_label(n) for n in names], fontsize=7)
        ax.set_xlabel("method (dots: training seeds; bar: mean)")
        ax.set_ylabel(label)
        low = min(float(r[column]) for r in rows)
        ax.set_ylim(max(0.0, min(low, thresholds.get(column, low)) - 5), 100)
    fig.suptitle("How far the training seed moves the best methods' numbers")
    fig.tight_layout()
    return fig

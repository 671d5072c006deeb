"""Scoring text <-> image models (notebook 05 and its final table), with confidence intervals.

A *model* is anything with ``name``, ``samples``, ``caption(latents)``, ``invert(embeddings,
samples, seed)`` and ``project(latents)``: an ``invcap.methods.TrainedMethod`` or a baseline of
``invcap.baselines``. Every metric is computed per item (a caption, an image) and kept as
``Outcomes`` with the item's *cluster*: its attribute combination where the data has attributes
(the captions of one combination are not independent), else its image. ``summarize`` turns the
outcomes of one or several training seeds into a value with a 95 % cluster-bootstrap interval:
each replicate resamples clusters with replacement, and seeds with replacement when there are
several, so the interval covers both the choice of combinations and the training seed.

Metrics that need no attributes (any dataset, Flickr30k included):
- captioning retrieval through f, both ways (``captioning``: R@1/5/10, VSE++ protocol);
- retrieval through f^-1 (``inverse_retrieval``): captions inverted to latents, ranked against
  the split's image latents (and back);
- ``generation``: per caption, R-precision of the generated image read by an *independent*
  captioner (ridge regression latent -> caption fitted on real training pairs, never the model
  under test), and PSNR / SSIM against the caption's own image.
Where the data has attributes, ``generation`` adds the attribute judge (``invcap.judge``): the
stated attributes all right, and each attribute; ``partial_variation`` measures whether samples
for a partial caption vary in the attributes it leaves out; ``decoder_ceiling`` is the judge on
the autoencoder's reconstructions of the real images, the most a generator can reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch

from invcap.linalg import cosine_similarity_matrix, label_codes
from invcap.retrieval import RECALL_AT, attribute_labels, ranks_from_similarity, relevance_matrix

__all__ = ["Outcomes", "bootstrap_interval", "summarize", "chance_all_correct", "CaptionSet", "Split",
           "independent_captioner", "captioning", "inverse_retrieval", "decode_all", "generation",
           "partial_variation", "decoder_ceiling", "CaptionProbe", "text_ceiling", "select_best", "collapsed",
           "JUDGE_REQUIRED", "N_BOOT"]

N_BOOT = 2000
JUDGE_REQUIRED = 97.0   # percent all-correct the judge must reach on real images before it may score
Decode = Callable[[torch.Tensor], torch.Tensor]


# --- outcomes and the cluster bootstrap --------------------------------------------------------

@dataclass
class Outcomes:
    """Per-item values of one metric (percent: a hit is 100, a miss 0) and each item's cluster."""

    values: np.ndarray    # (N,) float
    clusters: np.ndarray  # (N,) int codes

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        self.clusters = np.asarray(self.clusters, dtype=np.int64).reshape(-1)
        if self.values.shape != self.clusters.shape:
            raise ValueError(f"{self.values.shape[0]} values but {self.clusters.shape[0]} clusters")

    @property
    def mean(self) -> float:
        return float(self.values.mean()) if self.values.size else math.nan


def bootstrap_interval(values: np.ndarray, clusters: np.ndarray, n_boot: int = N_BOOT, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (S seeds, N items) under a bootstrap that
    draws the K clusters with replacement (every item of a drawn cluster comes along) and, when
    S > 1, the S seeds with replacement; the statistic of a replicate is the mean over its drawn
    seeds of each seed's mean over the drawn items. ``numpy.random.default_rng(seed)`` draws the
    clusters first (one (n_boot, K) integer array), then the seeds (one (n_boot, S) array)."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    codes, inverse = np.unique(np.asarray(clusters).reshape(-1), return_inverse=True)
    s, n = values.shape
    if n == 0 or inverse.shape[0] != n:
        raise ValueError(f"values {values.shape} and {inverse.shape[0]} clusters must describe the same items")
    if not (0 < level < 1) or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1, got {level}, {n_boot}")
    k = codes.shape[0]
    sums = np.zeros((s, k))
    for i in range(s):
        sums[i] = np.bincount(inverse, weights=values[i], minlength=k)
    sizes = np.bincount(inverse, minlength=k).astype(np.float64)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, k, size=(n_boot, k))
    counts = np.zeros((n_boot, k))
    np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1.0)
    per_seed = (counts @ sums.T) / (counts @ sizes)[:, None]            # (n_boot, S)
    if s > 1:
        seeds = rng.integers(0, s, size=(n_boot, s))
        stats = np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)
    else:
        stats = per_seed[:, 0]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def summarize(outcomes: Sequence[Outcomes], n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Value (mean over seeds of each seed's mean), 95 % interval, per-seed values and sizes of
    the outcomes of one metric from one or several training seeds (same items in each)."""
    if not outcomes:
        raise ValueError("summarize needs the outcomes of at least one seed")
    first = outcomes[0]
    if any(o.clusters.shape != first.clusters.shape or not np.array_equal(o.clusters, first.clusters)
           for o in outcomes):
        raise ValueError("every seed's outcomes must cover the same items (same clusters)")
    values = np.stack([o.values for o in outcomes])
    lo, hi = bootstrap_interval(values, first.clusters, n_boot=n_boot, seed=seed)
    return {"value": float(values.mean()), "lo": lo, "hi": hi, "per_seed": [float(v) for v in values.mean(axis=1)],
            "n": int(values.shape[1]), "clusters": int(np.unique(first.clusters).size)}


def chance_all_correct(attributes: Mapping[str, Sequence[str]]) -> float:
    """Percent all-correct of a generator that draws every attribute at random (uniform values)."""
    return 100.0 / math.prod(len(v) for v in attributes.values())


# --- what is scored ----------------------------------------------------------------------------

@dataclass
class Split:
    """The images of one split: latents (N, d), images (N, 3, H, W), their own captions'
    embeddings (N, C, d) and, where the data has them, attribute dicts."""

    name: str
    latents: torch.Tensor
    images: torch.Tensor
    caption_embeddings: torch.Tensor
    attributes: list[dict[str, str]] | None = None

    @classmethod
    def from_features(cls, features) -> "Split":
        images = features.images   # a float tensor, or a lazy uint8 view (Flickr30k): a val/test split fits
        images = images if isinstance(images, torch.Tensor) else images.float()
        return cls(str(features.split), features.latents, images, features.caption_embeddings,
                   None if features.attributes is None else [dict(a) for a in features.attributes])

    def clusters(self) -> np.ndarray:
        """Per image: the code of its attribute combination, or its own index without attributes."""
        if self.attributes is None:
            return np.arange(self.latents.shape[0])
        return label_codes(attribute_labels(self.attributes))[0].numpy()


@dataclass
class CaptionSet:
    """Captions to generate from: ``embeddings[j]`` embeds ``texts[j]``, written for image
    ``image[j]`` of its split; ``mentions[j]``: the attributes it states (None without attributes)."""

    wording: str
    texts: list[str]
    embeddings: torch.Tensor
    image: torch.Tensor
    mentions: list[tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        m = len(self.texts)
        if self.embeddings.dim() != 2 or self.embeddings.shape[0] != m or self.image.shape != (m,):
            raise ValueError(f"{m} texts, embeddings {tuple(self.embeddings.shape)} and image indices "
                             f"{tuple(self.image.shape)} must describe the same captions")
        if self.mentions is not None and len(self.mentions) != m:
            raise ValueError(f"{len(self.mentions)} mention tuples for {m} captions")

    @classmethod
    def own(cls, split: Split) -> "CaptionSet":
        """A split's own captions (embeddings only: evaluation needs no text)."""
        n, c, d = split.caption_embeddings.shape
        return cls("own", [""] * (n * c), split.caption_embeddings.reshape(n * c, d),
                   torch.arange(n).repeat_interleave(c))


def independent_captioner(train_latents: torch.Tensor, train_caption_embeddings: torch.Tensor,
                          encode: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """images -> caption embeddings through the autoencoder's encoder and a ridge regression
    latent -> caption fitted on the real training pairs: the reader of R-precision, trained
    independently of every model under test."""
    from invcap.captioning import fit_least_squares

    regression = fit_least_squares(train_latents, train_caption_embeddings)

    @torch.no_grad()
    def read(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([regression(encode(b.float()).double()).float() for b in images.split(1024)])
    return read


# --- retrieval ---------------------------------------------------------------------------------

def _ranks(image_side: torch.Tensor, caption_side: torch.Tensor, owner: torch.Tensor,
           labels: Sequence[Hashable] | None, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks: every image query over the caption bank, every caption query over the images."""
    relevant = relevance_matrix(owner, image_side.shape[0], labels)
    i2t = torch.cat([ranks_from_similarity(cosine_similarity_matrix(q, caption_side), r)
                     for q, r in zip(image_side.split(chunk), relevant.split(chunk))])
    relevant_t = relevant.T.contiguous()
    t2i = torch.cat([ranks_from_similarity(cosine_similarity_matrix(q, image_side), r)
                     for q, r in zip(caption_side.split(chunk), relevant_t.split(chunk))])
    return i2t, t2i


def _recall_outcomes(prefix: str, ranks: torch.Tensor, clusters: np.ndarray) -> dict[str, Outcomes]:
    return {f"{prefix}_R@{k}": Outcomes(100.0 * (ranks <= k).double().numpy(), clusters) for k in RECALL_AT}


def _labels(split: Split) -> list | None:
    return None if split.attributes is None else attribute_labels(split.attributes)


@torch.no_grad()
def captioning(model, split: Split) -> dict[str, Outcomes]:
    """Retrieval through f on the split's own captions: image -> text (``i2t_R@K``) and
    text -> image (``t2i_R@K``), attribute match where the data has attributes, else exact match."""
    n, c, d = split.caption_embeddings.shape
    owner = torch.arange(n).repeat_interleave(c)
    i2t, t2i = _ranks(model.caption(split.latents), split.caption_embeddings.reshape(n * c, d), owner, _labels(split))
    clusters = split.clusters()
    return {**_recall_outcomes("i2t", i2t, clusters), **_recall_outcomes("t2i", t2i, clusters[owner.numpy()])}


@torch.no_grad()
def inverse_retrieval(model, split: Split, seed: int = 0) -> dict[str, Outcomes]:
    """Retrieval through f^-1: every caption inverted (as the model generates: projected, z drawn
    for latent padding) and compared with the split's image latents by cosine similarity, both
    centred on the mean image latent. ``inv_t2i_R@K``: a caption finds its image among the split's;
    ``inv_i2t_R@K``: an image finds its captions."""
    n, c, d = split.caption_embeddings.shape
    owner = torch.arange(n).repeat_interleave(c)
    inverted = model.invert(split.caption_embeddings.reshape(n * c, d), samples=1, seed=seed)[:, 0]
    finite = torch.isfinite(inverted).all(dim=1)
    latents = model.project(split.latents.float())
    centre = latents.mean(dim=0)
    inverted = torch.where(finite[:, None], inverted - centre, torch.zeros_like(inverted))  # non-finite: no match
    i2t, t2i = _ranks(latents - centre, inverted, owner, _labels(split))
    t2i = torch.where(finite, t2i, torch.full_like(t2i, n + 1))
    clusters = split.clusters()
    return {**_recall_outcomes("inv_i2t", i2t, clusters), **_recall_outcomes("inv_t2i", t2i, clusters[owner.numpy()])}


# --- generation --------------------------------------------------------------------------------

@torch.no_grad()
def decode_all(model, embeddings: torch.Tensor, decode: Decode, samples: int = 1, seed: int = 0,
               batch_size: int = 1024) -> torch.Tensor:
    """(M, d) caption embeddings -> (M, samples, 3, H, W) decoded images, not clamped."""
    m, d = embeddings.shape
    latents = model.invert(embeddings, samples=samples, seed=seed).reshape(m * samples, d)
    images = torch.cat([decode(chunk).float().cpu() for chunk in latents.split(batch_size)])
    return images.reshape(m, samples, *images.shape[1:])


def _r_precision_hits(queries: torch.Tensor, captions: torch.Tensor, labels: np.ndarray, candidates: int,
                      seed: int, chunk: int = 1024) -> np.ndarray:
    """Per query, 100 when its own caption scores strictly higher (cosine) than each of
    ``candidates - 1`` captions drawn without replacement from rows of other labels, else 0 (a tie
    is a miss; a non-finite query misses). The draw: uniform random keys per (query, row), rows of
    the query's own label excluded, the ``candidates - 1`` largest kept (a uniform subset)."""
    n = queries.shape[0]
    code = torch.as_tensor(np.asarray(labels))
    pool = n - torch.bincount(code)[code]
    if int(pool.min()) < candidates - 1:
        raise ValueError(f"a query has only {int(pool.min())} captions of other images/combinations; R-precision "
                         f"needs {candidates - 1} (lower `candidates`)")
    gen = torch.Generator().manual_seed(seed)
    finite = torch.isfinite(queries).all(dim=1)
    clean = torch.nan_to_num(queries.double(), nan=0.0, posinf=0.0, neginf=0.0)
    hits = []
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        sims = cosine_similarity_matrix(clean[rows], captions.double())
        keys = torch.rand(len(rows), n, generator=gen, dtype=torch.float64)
        keys[code[rows][:, None] == code[None, :]] = -1.0
        negatives = keys.topk(candidates - 1, dim=1).indices
        own = sims[torch.arange(len(rows)), rows]
        hits.append(finite[rows] & (own > sims.gather(1, negatives).max(dim=1).values))
    return 100.0 * torch.cat(hits).double().numpy()


def _judged(judge, images: torch.Tensor, truth: Sequence[Mapping[str, str]],
            mentions: Sequence[tuple[str, ...]]) -> dict[str, np.ndarray]:
    """Per image: 100/0 per attribute (NaN where its caption does not state it), and "all"."""
    predicted = judge.predict_indices(images)           # (M, A), -1 rows for non-finite images
    names = list(judge.attributes)
    out = {}
    for a, name in enumerate(names):
        target = np.array([list(judge.attributes[name]).index(t[name]) for t in truth])
        right = 100.0 * (predicted[:, a].numpy() == target)
        out[name] = np.where([name in m for m in mentions], right, np.nan)
    stated = np.stack([out[name] for name in names])
    out["all"] = np.where(np.isnan(stated), 100.0, stated).min(axis=0)
    return out


@torch.no_grad()
def generation(model, captions: CaptionSet, split: Split, decode: Decode, read: Callable[[torch.Tensor], torch.Tensor],
               judge=None, candidates: int = 100, seed: int = 0, pixel_scores: bool = True) -> dict[str, Outcomes]:
    """One image per caption. ``r_precision``: the independent captioner ``read`` ranks its
    caption against ``candidates - 1`` captions of other combinations (other images without
    attributes). ``psnr``/``ssim`` against the caption's own image. With a judge: ``all_correct``
    (every stated attribute right) and ``acc_<attribute>`` (over captions that state it)."""
    from invcap.autoencoder import psnr, ssim

    images = decode_all(model, captions.embeddings, decode, samples=1, seed=seed)[:, 0]
    clean = torch.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    owner = captions.image
    clusters = split.clusters()[owner.numpy()]
    labels = clusters if split.attributes is not None else owner.numpy()
    out = {"r_precision": Outcomes(_r_precision_hits(read(clean), captions.embeddings, labels, candidates, seed),
                                   clusters)}
    if pixel_scores:
        reference = split.images[owner].float()
        out["psnr"] = Outcomes(psnr(clean, reference).double().clamp(max=100.0).numpy(), clusters)  # identical: 100 dB
        if min(reference.shape[-2:]) >= 11:   # SSIM's window
            out["ssim"] = Outcomes(ssim(clean, reference).double().numpy(), clusters)
    if judge is not None and split.attributes is not None:
        out.update(_attribute_outcomes(judge, images, captions, split, clusters))
    return out


def _attribute_outcomes(reader, inputs: torch.Tensor, captions: CaptionSet, split: Split,
                        clusters: np.ndarray) -> dict[str, Outcomes]:
    """``all_correct`` (every stated attribute right) and ``acc_<attribute>`` (over the captions that
    state it) of a reader with ``attributes`` and ``predict_indices``: the judge on generated images,
    or ``CaptionProbe`` on caption embeddings."""
    mentions = captions.mentions or [tuple(reader.attributes)] * len(captions.texts)
    judged = _judged(reader, inputs, [split.attributes[i] for i in captions.image.tolist()], mentions)
    out = {"all_correct": Outcomes(judged.pop("all"), clusters)}
    for name, values in judged.items():
        keep = ~np.isnan(values)
        if keep.any():
            out[f"acc_{name}"] = Outcomes(values[keep], clusters[keep])
    return out


@torch.no_grad()
def partial_variation(model, captions: CaptionSet, split: Split, decode: Decode, judge, samples: int = 8,
                      seed: int = 0) -> dict[str, Outcomes]:
    """For partial captions, ``samples`` images each. ``stated_correct``: share of samples with every
    stated attribute right; ``varies_<attribute>``, per omitted attribute: the number of distinct
    values the judge reads among the samples, minus one, over the most possible
    (min(samples, values) - 1), in percent: 0 when every sample shows the same value, 100 when
    they show as many values as they can."""
    if captions.mentions is None or split.attributes is None:
        raise ValueError("partial_variation needs captions with mentions and a split with attributes")
    m = len(captions.texts)
    drawn = samples if getattr(model, "samples", True) else 1   # a deterministic model: one image, S copies
    images = decode_all(model, captions.embeddings, decode, samples=drawn, seed=seed)
    predicted = judge.predict_indices(images.reshape(m * drawn, *images.shape[2:])).reshape(m, drawn, -1)
    predicted = predicted.expand(m, samples, predicted.shape[2])
    names = list(judge.attributes)
    truth = [split.attributes[i] for i in captions.image.tolist()]
    clusters = split.clusters()[captions.image.numpy()]
    stated = np.zeros(m)
    varies: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
    for j in range(m):
        ok = np.ones(samples, dtype=bool)
        for a, name in enumerate(names):
            row = predicted[j, :, a].numpy()
            if name in captions.mentions[j]:
                ok &= row == list(judge.attributes[name]).index(truth[j][name])
            else:
                most = min(samples, len(judge.attributes[name])) - 1
                distinct = len(set(row[row >= 0].tolist()))
                varies[name].append((100.0 * max(distinct - 1, 0) / most if most else 0.0, int(clusters[j])))
        stated[j] = 100.0 * ok.mean()
    out = {"stated_correct": Outcomes(stated, clusters)}
    for name, pairs in varies.items():
        if pairs:
            values, codes = zip(*pairs)
            out[f"varies_{name}"] = Outcomes(np.array(values), np.array(codes))
    return out


@torch.no_grad()
def decoder_ceiling(judge, decode: Decode, split: Split) -> dict[str, Outcomes]:
    """The judge on the autoencoder's reconstructions of the split's real images (``all_correct``)
    and on the real images themselves (``real_all_correct``): what a perfect inversion can reach."""
    if split.attributes is None:
        raise ValueError(f"split {split.name!r} has no attributes: the judge cannot score it")
    recon = torch.cat([decode(z).float() for z in split.latents.split(1024)])
    clusters = split.clusters()
    mentions = [tuple(judge.attributes)] * len(split.attributes)
    return {"all_correct": Outcomes(_judged(judge, recon, split.attributes, mentions)["all"], clusters),
            "real_all_correct": Outcomes(_judged(judge, split.images, split.attributes, mentions)["all"], clusters)}


# --- decisions ---------------------------------------------------------------------------------

def select_best(rows: Mapping[str, Mapping[str, float]], candidates: Sequence[str], reference: str,
                unseen: str = "compositional_val/training/all_correct", seen: str = "val/training/all_correct",
                captioning_metric: str = "val/i2t_R@1") -> dict[str, Any]:
    """The best-method rule, reading only validation keys of ``rows`` (method -> metric -> value):
    among ``candidates`` whose image -> text R@1 through f on ``val`` is at least the
    ``reference`` method's, the highest all-correct rate on unseen combinations
    (``compositional_val``, training wording), ties broken by the seen rate (``val``); when no
    candidate captions as well as the reference, the highest unseen rate among all candidates."""
    for key in (unseen, seen, captioning_metric):
        if not key.split("/")[0].endswith("val"):
            raise ValueError(f"select_best decides on validation splits only; {key!r} is not one")
    missing = [n for n in list(candidates) + [reference] if n not in rows]
    if missing or not candidates:
        raise ValueError(f"select_best needs rows for every candidate and the reference; missing {missing}")
    bar = rows[reference][captioning_metric]
    captions_well = [n for n in candidates if rows[n][captioning_metric] >= bar]
    pool = captions_well or list(candidates)
    best = max(pool, key=lambda n: (rows[n][unseen], rows[n][seen]))
    rule = (f"highest {unseen} among the candidates with {captioning_metric} >= {reference}'s ({bar:.1f})"
            if captions_well else f"highest {unseen} (no candidate reaches {reference}'s {captioning_metric})")
    return {"method": best, "rule": rule, "pool": pool, "reference_r1": bar}


def collapsed(value: float, reference_values: Sequence[float], fraction: float = 0.5) -> bool:
    """A run's rate collapsed when it is below ``fraction`` of the median over the method's seeds."""
    values = [v for v in reference_values if math.isfinite(v)]
    return bool(values) and float(np.median(values)) > 10.0 and value < fraction * float(np.median(values))


# --- the text side: what the caption embedding says --------------------------------------------

class CaptionProbe:
    """A linear classifier per attribute on caption embeddings, trained on the training split's own
    captions (each stated attribute is a label; omitted ones are not). It asks what a generator
    reading the same frozen embedding has to work with: a caption whose attributes this probe
    cannot read is one no model trained on these captions can be expected to draw. Fixed recipe
    (no tuning): standardised inputs, zero initialisation, full-batch Adam on the mean masked
    cross-entropy; convex, so the result does not depend on a seed."""

    def __init__(self, attributes: Mapping[str, Sequence[str]], mean: torch.Tensor, scale: torch.Tensor,
                 heads: Sequence[torch.Tensor]) -> None:
        self.attributes = {k: tuple(v) for k, v in attributes.items()}
        self.mean, self.scale, self.heads = mean, scale, list(heads)

    @classmethod
    def fit(cls, caption_embeddings: torch.Tensor, truth: Sequence[Mapping[str, str]],
            mentions: Sequence[Sequence[Sequence[str]]] | None, attributes: Mapping[str, Sequence[str]],
            steps: int = 500, lr: float = 0.01) -> "CaptionProbe":
        """``caption_embeddings`` (N, C, d) of N images with attribute dicts ``truth``; ``mentions[i][j]``:
        the attributes caption j of image i states (None: every caption states every attribute)."""
        if caption_embeddings.dim() != 3 or caption_embeddings.shape[0] != len(truth):
            raise ValueError(f"caption_embeddings must be (N, C, d) for the {len(truth)} images, "
                             f"got {tuple(caption_embeddings.shape)}")
        n, c, d = caption_embeddings.shape
        x = caption_embeddings.reshape(n * c, d).double()
        mean, scale = x.mean(0), x.std(0).clamp_min(1e-8)
        x = (x - mean) / scale
        names = list(attributes)
        labels = torch.tensor([[list(attributes[a]).index(t[a]) for a in names] for t in truth]).repeat_interleave(c, 0)
        stated = (torch.ones(n * c, len(names), dtype=torch.bool) if mentions is None else
                  torch.tensor([[a in m for a in names] for caps in mentions for m in caps[:c]]))
        heads = [torch.zeros(d + 1, len(attributes[a]), dtype=torch.float64, requires_grad=True) for a in names]
        optimizer = torch.optim.Adam(heads, lr=lr)
        ones = torch.ones(n * c, 1, dtype=torch.float64)
        xb = torch.cat([x, ones], 1)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = sum((torch.nn.functional.cross_entropy(xb @ w, labels[:, k], reduction="none") * stated[:, k]).sum()
                       / stated[:, k].sum().clamp_min(1) for k, w in enumerate(heads))
            loss.backward()
            optimizer.step()
        return cls(attributes, mean, scale, [w.detach() for w in heads])

    @torch.no_grad()
    def predict_indices(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(M, A) predicted value indices for caption embeddings (M, d)."""
        x = (embeddings.double() - self.mean) / self.scale
        xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
        return torch.stack([(xb @ w).argmax(1) for w in self.heads], 1)


def text_ceiling(probe: CaptionProbe, captions: CaptionSet, split: Split) -> dict[str, Outcomes]:
    """The probe on the captions a generator is scored on: ``all_correct`` (every stated attribute read
    right from the embedding) and ``acc_<attribute>``, with the same clusters and rules as ``generation``."""
    if split.attributes is None:
        raise ValueError(f"split {split.name!r} has no attributes: there is nothing for the probe to read")
    return _attribute_outcomes(probe, captions.embeddings, captions, split, split.clusters()[captions.image.numpy()])

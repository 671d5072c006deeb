import math

import numpy as np
import pytest
import torch

from invcap import evaluation as ev

ATTRS = {"a": ("x", "y"), "b": ("p", "q", "r")}
COMBOS = [{"a": a, "b": b} for a in ATTRS["a"] for b in ATTRS["b"]]
D = 8


def _direct_bootstrap(values, clusters, n_boot, seed, level=0.95):
    """The bootstrap written out: per replicate, the drawn clusters' items concatenated, per drawn seed."""
    values = np.atleast_2d(values)
    codes = np.unique(clusters)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(codes), size=(n_boot, len(codes)))
    seeds = rng.integers(0, values.shape[0], size=(n_boot, values.shape[0])) if values.shape[0] > 1 else None
    stats = []
    for b in range(n_boot):
        items = np.concatenate([np.flatnonzero(clusters == codes[k]) for k in drawn[b]])
        chosen = seeds[b] if seeds is not None else [0]
        stats.append(np.mean([values[s, items].mean() for s in chosen]))
    return tuple(np.percentile(stats, [2.5, 97.5]))


def test_cluster_bootstrap_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 12, size=90)
    one = 100.0 * (rng.random(90) < 0.7)
    assert ev.bootstrap_interval(one, clusters, n_boot=300, seed=3) == pytest.approx(
        _direct_bootstrap(one, clusters, 300, 3), abs=1e-9)
    three = 100.0 * (rng.random((3, 90)) < np.array([[0.6], [0.7], [0.9]]))
    assert ev.bootstrap_interval(three, clusters, n_boot=300, seed=4) == pytest.approx(
        _direct_bootstrap(three, clusters, 300, 4), abs=1e-9)
    # clustering widens the interval when items within a cluster agree
    blocky = np.repeat(100.0 * (rng.random(12) < 0.5), 10)
    lo_c, hi_c = ev.bootstrap_interval(blocky, np.repeat(np.arange(12), 10), seed=0)
    lo_i, hi_i = ev.bootstrap_interval(blocky, np.arange(120), seed=0)
    assert hi_c - lo_c > 2 * (hi_i - lo_i)
    with pytest.raises(ValueError, match="same items"):
        ev.bootstrap_interval(one, clusters[:10])


def test_summarize_combines_seeds_and_checks_items():
    clusters = np.repeat(np.arange(5), 4)
    a, b = ev.Outcomes(np.full(20, 100.0), clusters), ev.Outcomes(np.zeros(20), clusters)
    s = ev.summarize([a, b], n_boot=200)
    assert s["value"] == 50.0 and s["per_seed"] == [100.0, 0.0] and s["n"] == 20 and s["clusters"] == 5
    assert s["lo"] <= 50.0 <= s["hi"]
    with pytest.raises(ValueError, match="same items"):
        ev.summarize([a, ev.Outcomes(np.zeros(20), np.arange(20))])
    assert ev.chance_all_correct({"shape": "abcd", "colour": "abcd", "size": "abc", "position": "abcd"}) == \
        pytest.approx(100 / 192)


def test_select_best_reads_validation_only():
    rows = {"paper": {"val/i2t_R@1": 40, "val/training/all_correct": 1, "compositional_val/training/all_correct": 1},
            "a": {"val/i2t_R@1": 60, "val/training/all_correct": 98, "compositional_val/training/all_correct": 90},
            "b": {"val/i2t_R@1": 45, "val/training/all_correct": 99, "compositional_val/training/all_correct": 91},
            "c": {"val/i2t_R@1": 20, "val/training/all_correct": 99, "compositional_val/training/all_correct": 95}}
    chosen = ev.select_best(rows, ["a", "b", "c"], "paper")
    assert chosen["method"] == "b" and chosen["pool"] == ["a", "b"]     # c captions worse than the paper row
    # test-split numbers that say otherwise change nothing
    with_test = {n: {**r, "compositional_test/training/all_correct": 100.0 if n == "a" else 0.0,
                     "test/i2t_R@1": 0.0} for n, r in rows.items()}
    assert ev.select_best(with_test, ["a", "b", "c"], "paper")["method"] == "b"
    # nobody captions as well as the reference: the best unseen rate among all candidates
    assert ev.select_best(rows, ["c"], "paper")["method"] == "c"
    ties = {**rows, "d": {**rows["b"], "val/training/all_correct": 99.5}}
    assert ev.select_best(ties, ["b", "d"], "paper")["method"] == "d"   # ties on unseen: the seen rate
    with pytest.raises(ValueError, match="validation"):
        ev.select_best(rows, ["a"], "paper", unseen="compositional_test/training/all_correct")
    with pytest.raises(ValueError, match="missing"):
        ev.select_best(rows, ["zz"], "paper")


def test_collapse_is_relative_to_the_methods_own_seeds():
    assert ev.collapsed(2.0, [98.0, 97.0, 2.0]) and not ev.collapsed(90.0, [98.0, 97.0, 90.0])
    assert not ev.collapsed(0.3, [0.2, 0.5, 0.3])   # a method at chance has nothing to collapse from


# --- a toy world: latent = attribute codes, image = latent written into pixels -----------------

class Judge:
    attributes = ATTRS

    def predict_indices(self, images):
        codes = (2 * images[:, 0, 0, :2]).round().long()
        codes[~torch.isfinite(images.flatten(1)).all(dim=1)] = -1
        return codes

    def predict(self, images):
        return [{n: ATTRS[n][int(i)] for n, i in zip(ATTRS, row)} for row in self.predict_indices(images)]


def decode(latents):
    images = torch.zeros(latents.shape[0], 3, 4, 4)
    images[:, 0, 0, :2] = latents[:, :2] / 2   # codes 0..2 as pixels in [0, 1]
    return images


def code_of(attrs):
    z = torch.zeros(D)
    z[0], z[1] = ATTRS["a"].index(attrs["a"]), ATTRS["b"].index(attrs["b"])
    return z


class Model:
    """Perfect: a caption embedding carries its combination's code in coordinates 2 + code."""
    name, samples = "perfect", False

    def __init__(self, noise=0.0):
        self.noise = noise
        self.samples = bool(noise)   # a noisy model samples; a deterministic one gets one image per caption

    def project(self, latents):
        return latents

    def caption(self, latents):
        out = torch.zeros(latents.shape[0], D)
        out[torch.arange(latents.shape[0]), 2 + (latents[:, 0] * 3 + latents[:, 1]).round().long()] = 1.0
        return out

    def invert(self, y, samples=1, seed=0):
        combo = y[:, 2:].argmax(dim=1)
        base = torch.zeros(y.shape[0], D)
        base[:, 0], base[:, 1] = (combo // 3).float(), (combo % 3).float()
        if not self.noise:
            return base[:, None].expand(-1, samples, -1).clone()
        out = []
        for s in range(samples):   # attribute b drawn at random
            z = base.clone()
            z[:, 1] = torch.randint(3, (y.shape[0],), generator=torch.Generator().manual_seed(seed + s)).float()
            out.append(z)
        return torch.stack(out, dim=1)


def _split(copies=4):
    attributes = COMBOS * copies
    latents = torch.stack([code_of(a) for a in attributes])
    captions = Model().caption(latents)[:, None].repeat(1, 2, 1) + 0.01 * torch.randn(len(attributes), 2, D,
                                                                                      generator=torch.Generator().manual_seed(0))
    return ev.Split("toy", latents, decode(latents), captions, attributes)


def _partial_captions(split, omit):
    n = split.latents.shape[0]
    mentions = [tuple(a for a in ATTRS if a != omit)] * n
    return ev.CaptionSet("partial", ["x"] * n, split.caption_embeddings[:, 0], torch.arange(n), mentions)


def test_retrieval_and_generation_of_a_perfect_model_score_100():
    split = _split()
    model = Model()
    scores = ev.captioning(model, split)
    assert {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} == set(scores)
    assert all(o.mean == 100.0 for o in scores.values())
    assert scores["t2i_R@1"].values.shape == (split.latents.shape[0] * 2,)
    inverse = ev.inverse_retrieval(model, split)
    assert inverse["inv_i2t_R@1"].mean == 100.0
    captions = ev.CaptionSet.own(split)
    read = lambda images: Model().caption(2 * images[:, 0, 0, :])   # noqa: E731 - reads the code back
    out = ev.generation(model, captions, split, decode, read, Judge(), candidates=5, pixel_scores=False)
    assert out["all_correct"].mean == 100.0 and out["acc_a"].mean == 100.0 and out["r_precision"].mean == 100.0
    assert out["all_correct"].values.shape == (len(captions.texts),)
    assert len(np.unique(out["all_correct"].clusters)) == len(COMBOS)   # clusters are combinations
    ceiling = ev.decoder_ceiling(Judge(), decode, split)
    assert ceiling["all_correct"].mean == 100.0 and ceiling["real_all_correct"].mean == 100.0


def test_generation_scores_only_the_attributes_a_caption_states():
    split = _split()
    wrong_b = Model(noise=1.0)   # gets 'a' right, draws 'b' at random
    captions = _partial_captions(split, omit="b")
    out = ev.generation(wrong_b, captions, split, decode, lambda im: Model().caption(2 * im[:, 0, 0, :]), Judge(),
                        candidates=3, pixel_scores=False)
    assert out["all_correct"].mean == 100.0 and "acc_b" not in out
    full = ev.generation(wrong_b, ev.CaptionSet.own(split), split, decode, lambda im: Model().caption(2 * im[:, 0, 0, :]),
                         Judge(), candidates=3, pixel_scores=False)
    assert 10 < full["all_correct"].mean < 70


def test_partial_variation_counts_distinct_values_of_the_omitted_attribute():
    split = _split()
    captions = _partial_captions(split, omit="b")
    fixed = ev.partial_variation(Model(), captions, split, decode, Judge(), samples=6)
    assert fixed["varies_b"].mean == 0.0 and fixed["stated_correct"].mean == 100.0
    varied = ev.partial_variation(Model(noise=1.0), captions, split, decode, Judge(), samples=6)
    assert varied["varies_b"].mean > 70 and varied["stated_correct"].mean == 100.0
    assert "varies_a" not in varied


def test_metrics_without_attributes_use_exact_match_and_image_clusters():
    split = _split(copies=1)
    split = ev.Split("flickr-like", split.latents, split.images, split.caption_embeddings, None)
    assert np.array_equal(split.clusters(), np.arange(len(COMBOS)))
    scores = ev.captioning(Model(), split)
    assert scores["i2t_R@1"].mean == 100.0
    out = ev.generation(Model(), ev.CaptionSet.own(split), split, decode, lambda im: Model().caption(2 * im[:, 0, 0, :]),
                        judge=Judge(), candidates=3)
    assert "all_correct" not in out and {"r_precision", "psnr"} <= set(out)   # 4x4 images: below SSIM's window
    assert out["psnr"].mean > 50


def test_r_precision_against_every_other_label_matches_a_direct_loop():
    g = torch.Generator().manual_seed(5)
    queries, captions = torch.randn(30, 4, generator=g), torch.randn(30, 4, generator=g)
    labels = np.repeat(np.arange(10), 3)
    hits = ev._r_precision_hits(queries, captions, labels, candidates=28, seed=0)   # the whole pool: no chance left
    sims = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(captions, dim=1).T
    direct = [100.0 * float(sims[i, i] > max(sims[i, j] for j in range(30) if labels[j] != labels[i]))
              for i in range(30)]
    assert hits.tolist() == direct
    tied = ev._r_precision_hits(torch.ones(30, 4), torch.ones(30, 4), labels, candidates=5, seed=0)
    assert tied.sum() == 0                                            # a tie is a miss
    nan = queries.clone()
    nan[0] = float("nan")
    assert ev._r_precision_hits(nan, captions, labels, candidates=5, seed=0)[0] == 0
    with pytest.raises(ValueError, match="lower `candidates`"):
        ev._r_precision_hits(queries, captions, labels, candidates=29, seed=0)


def test_caption_probe_reads_stated_attributes_and_scores_like_generation():
    # captions carry their combination in coordinates 2.. (plus noise); a second "wording" moves them
    split = _split(copies=6)
    truth = split.attributes
    mentions = [[tuple(ATTRS)] * 2 for _ in truth]
    probe = ev.CaptionProbe.fit(split.caption_embeddings, truth, mentions, ATTRS)
    own = ev.CaptionSet.own(split)
    read = ev.text_ceiling(probe, own, split)
    assert read["all_correct"].mean == 100.0 and read["acc_a"].mean == 100.0
    assert len(np.unique(read["all_correct"].clusters)) == len(COMBOS)
    # a wording the probe never saw: the combination code sits in other coordinates -> it reads far less
    moved = ev.CaptionSet("moved", own.texts, torch.roll(own.embeddings, 1, dims=1), own.image)
    assert ev.text_ceiling(probe, moved, split)["all_correct"].mean < 60.0
    # only stated attributes count, as in generation; unstated ones are not labels when fitting either
    partial = _partial_captions(split, omit="b")
    assert "acc_b" not in ev.text_ceiling(probe, partial, split)
    unlabeled = [[("a",)] * 2 for _ in truth]   # b is never stated: its head stays at zero -> first value
    blind = ev.CaptionProbe.fit(split.caption_embeddings, truth, unlabeled, ATTRS)
    assert bool((blind.predict_indices(own.embeddings)[:, 1] == 0).all())
    with pytest.raises(ValueError, match=r"\(N, C, d\)"):
        ev.CaptionProbe.fit(split.caption_embeddings[0], truth, mentions, ATTRS)
    with pytest.raises(ValueError, match="no attributes"):
        ev.text_ceiling(probe, own, ev.Split("x", split.latents, split.images, split.caption_embeddings, None))


def test_subspace_ceiling_of_notebook_05_drops_with_the_projection_rank():
    from types import SimpleNamespace

    from invcap.studies import nb05_closing_the_inversion_gap as nb05

    split = _split(copies=6)
    train = SimpleNamespace(latents=split.latents + 0.01 * torch.randn(split.latents.shape,
                                                                       generator=torch.Generator().manual_seed(1)))
    inputs = nb05.Inputs(train, {"toy": split}, {}, decode, None, None, Judge())
    out = nb05.ceiling(inputs, ranks=(1, 2, D))["toy"]
    assert out["all_correct"]["value"] == 100.0 == out["real_all_correct"]["value"]
    assert out[f"rank{D}_all_correct"]["value"] == 100.0 and out["rank2_all_correct"]["value"] == 100.0
    assert out["rank1_all_correct"]["value"] < 60.0   # one direction cannot hold both codes
    assert "rank-1 projections" in nb05.ceiling_table({"ceiling": {"toy": out}})
    assert nb05.image_ranks() == tuple(sorted({m.image_rank for m in nb05.METHODS.values() if m.image_rank}))

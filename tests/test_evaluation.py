import math

import numpy as np
import pytest
import torch

from invcap.evaluation import generate_split, pairwise_diversity, r_precision, score_generated
from invcap.judge import AttributeJudge

TOY = {"colour": ("red", "green"), "side": ("left", "right")}


def _clusters(n_labels=30, per_label=5, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_labels, dim, generator=g)
    labels = [i for i in range(n_labels) for _ in range(per_label)]
    captions = centres[labels] + 0.1 * torch.randn(len(labels), dim, generator=g)
    return captions, labels


def test_r_precision_extremes_ties_and_non_finite_queries():
    captions, labels = _clusters()
    assert r_precision(captions, captions, labels, candidates=50) == 100.0
    noise = torch.randn(captions.shape, generator=torch.Generator().manual_seed(1))
    assert r_precision(noise, captions, labels, candidates=50) < 15.0   # chance is 2%
    assert r_precision(torch.zeros_like(captions), captions, labels, candidates=50) == 0.0   # all ties: misses
    bad = captions.clone()
    bad[:10] = float("nan")
    assert r_precision(bad, captions, labels, candidates=50) == pytest.approx(100.0 * 140 / 150)


def test_r_precision_against_every_other_label_matches_a_direct_computation():
    captions, labels = _clusters(n_labels=6, per_label=4, seed=2)
    queries = captions + 0.8 * torch.randn(captions.shape, generator=torch.Generator().manual_seed(3))
    n = len(labels)
    pool = n - 4   # candidates = all captions of other labels + its own
    q = torch.nn.functional.normalize(queries.double(), dim=1)
    c = torch.nn.functional.normalize(captions.double(), dim=1)
    hits = 0
    for i in range(n):
        own = float(q[i] @ c[i])
        others = [float(q[i] @ c[j]) for j in range(n) if labels[j] != labels[i]]
        hits += own > max(others)
    assert r_precision(queries, captions, labels, candidates=pool + 1) == pytest.approx(100.0 * hits / n)


def test_r_precision_rejects_bad_input():
    captions, labels = _clusters(n_labels=3, per_label=2)
    with pytest.raises(ValueError, match="other attribute combinations"):
        r_precision(captions, captions, labels, candidates=100)
    with pytest.raises(ValueError, match="labels"):
        r_precision(captions, captions, labels[:-1], candidates=3)
    with pytest.raises(ValueError, match="must both be"):
        r_precision(captions, captions[:, :3], labels, candidates=3)


def test_pairwise_diversity_matches_a_direct_loop():
    g = torch.Generator().manual_seed(4)
    samples = torch.rand(3, 4, 3, 5, 5, generator=g, dtype=torch.float64)
    expected = np.mean([float(((samples[n, i] - samples[n, j]) ** 2).mean().sqrt())
                        for n in range(3) for i in range(4) for j in range(i + 1, 4)])
    assert pairwise_diversity(samples) == pytest.approx(expected, rel=1e-12)
    assert pairwise_diversity(samples[:, :1].expand(3, 4, 3, 5, 5)) == 0.0
    with pytest.raises(ValueError, match="S >= 2"):
        pairwise_diversity(samples[:, :1])


class _Identity:
    """A stand-in trained method whose latents are the caption embeddings themselves."""

    def invert(self, y, samples=1, seed=0):
        return y[:, None, :].expand(y.shape[0], samples, y.shape[1]).clone()


class _Oracle:
    def __init__(self, labels):
        self.labels = labels

    def predict(self, images):
        return [dict(a) for a in self.labels]


def test_generate_and_score_plumbing():
    n, c = 40, 3
    g = torch.Generator().manual_seed(5)
    attributes = [{"colour": "red" if i % 2 else "green", "side": ("left", "right")[i % 4 // 2], "id": str(i)}
                  for i in range(n)]
    embeddings = torch.rand(n, c, 3 * 4 * 4, generator=g)   # "latents" that decode to 4x4 images
    decode = lambda z: z.view(-1, 3, 4, 4)  # noqa: E731
    images = generate_split(_Identity(), embeddings, decode, samples=2)
    assert images.shape == (n, c, 2, 3, 4, 4)
    owners = [a for a in attributes for _ in range(c * 2)]
    scores = score_generated(images, embeddings, attributes, _Oracle(owners),
                             caption_images=lambda im: im.flatten(1), candidates=20)
    assert scores["judge"]["all"] == 100.0 and scores["n_images"] == n * c * 2
    assert scores["r_precision"] == 100.0   # every image *is* its caption
    assert scores["diversity"] == 0.0       # identical samples
    with pytest.raises(ValueError, match="same images"):
        score_generated(images, embeddings[:5], attributes, _Oracle(owners), lambda im: im.flatten(1))
    assert isinstance(AttributeJudge(TOY, 16, 4), torch.nn.Module)


class _Backwards:
    """A stand-in trained method whose f^-1 sends the k-th caption of the bank to ``targets[k]``."""

    def __init__(self, targets):
        self.targets, self.method = targets, type("Spec", (), {"name": "stand-in"})()

    def invert(self, y, samples=1, seed=0):
        assert y.shape[0] == self.targets.shape[0]
        return self.targets[:, None, :].expand(-1, samples, -1).clone()

    def project(self, latents):
        return latents


def test_inverse_retrieval_ranks_captions_by_their_inverted_latents():
    from types import SimpleNamespace

    from invcap.evaluation import inverse_retrieval

    n, c, d = 60, 5, 24
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(n, d, generator=g) + 5.0          # offset: centring must remove it
    split = SimpleNamespace(caption_embeddings=torch.randn(n, c, 8, generator=g), latents=latents, attributes=None)
    near_own = latents.repeat_interleave(c, dim=0) + 0.05 * torch.randn(n * c, d, generator=g)
    assert inverse_retrieval(_Backwards(near_own), split)["i2t"]["R@1"] == 100.0
    near_next = latents.roll(1, dims=0).repeat_interleave(c, dim=0)  # every caption lands on another image
    assert inverse_retrieval(_Backwards(near_next), split)["i2t"]["R@1"] == 0.0
    # with attribute labels, a caption landing on another image with the same label counts
    split.attributes = [{"colour": "red" if i % 2 else "green"} for i in range(n)]
    near_same_label = latents.roll(2, dims=0).repeat_interleave(c, dim=0)
    assert inverse_retrieval(_Backwards(near_same_label), split)["i2t"]["R@1"] == 100.0
    broken = near_own.clone()
    broken[7, 0] = float("inf")
    with pytest.raises(ValueError, match="not finite"):
        inverse_retrieval(_Backwards(broken), split)


def test_committed_ablation_table():
    import csv
    import json
    from pathlib import Path

    from invcap.evaluation import ABLATION_COLUMNS
    from invcap.methods import METHODS

    results = Path(__file__).resolve().parents[1] / "results"
    with open(results / "ablation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == ABLATION_COLUMNS, "results/ablation.csv is stale: run notebook 05 (make paper)"
    assert {r["method"] for r in rows} <= set(METHODS) and "paper" in {r["method"] for r in rows}
    for r in rows:
        for column in ABLATION_COLUMNS[1:]:
            value = float(r[column])
            if column == "diversity":
                assert math.isnan(value) or value >= 0
            elif column == "forward_mse":
                assert 0 < value < 1
            else:
                assert 0 <= value <= 100, (r["method"], column, value)
    record = json.loads((results / "ablation.json").read_text())
    assert {"config", "seed", "versions", "device", "git_commit"} <= set(record["run"])
    assert record["best"]["method"] in METHODS and set(record["goal"]) and record["judge_at_least_97"]


def test_summarize_seeds_matches_numpy():
    from invcap.evaluation import summarize_seeds

    rows = [{"method": "a", "seed": s, "captioning_r1": r1, "all_correct_seen": seen, "all_correct_unseen": unseen}
            for s, (r1, seen, unseen) in enumerate([(70.0, 98.0, 86.0), (75.0, 97.0, 82.0), (77.0, 99.0, 84.5)])]
    rows.append({"method": "b", "seed": 0, "captioning_r1": 9.0, "all_correct_seen": 98.6, "all_correct_unseen": 85.2})
    a, b = summarize_seeds(rows, {"all_correct_unseen": 85.0, "captioning_r1": 28.0})
    unseen = np.array([86.0, 82.0, 84.5])
    assert a["method"] == "a" and a["seeds"] == 3
    assert a["all_correct_unseen_mean"] == pytest.approx(unseen.mean(), rel=1e-12)
    assert a["all_correct_unseen_std"] == pytest.approx(unseen.std(ddof=1), rel=1e-12)
    assert (a["all_correct_unseen_min"], a["all_correct_unseen_max"]) == (82.0, 86.0)
    assert a["all_correct_unseen_seeds_meeting"] == 1 and a["captioning_r1_seeds_meeting"] == 3
    assert "all_correct_seen_seeds_meeting" not in a            # no threshold given for it
    assert b["seeds"] == 1 and b["captioning_r1_std"] == 0.0 and b["captioning_r1_seeds_meeting"] == 0


def test_seed_study_trains_each_seed_once_and_reuses_the_cache(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from invcap.evaluation import SEED_COLUMNS, seed_study

    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    n, c, d = 160, 2, 3 * 4 * 4   # R-precision needs 99 captions of other labels per query
    g = torch.Generator().manual_seed(8)
    attributes = [{"colour": ("red", "green", "blue")[i % 3]} for i in range(n)]

    def split():
        latents = torch.rand(n, d, generator=g)
        return SimpleNamespace(latents=latents, caption_embeddings=latents[:, None, :] + 0.01 * torch.randn(n, c, d, generator=g),
                               attributes=attributes, images=latents.view(n, 3, 4, 4))
    train, seen, unseen = split(), split(), split()
    decode = lambda z: z.reshape(-1, 3, 4, 4)  # noqa: E731
    rows = seed_study(["paper", "bidirectional"], [0, 1], train, seen, unseen, _Oracle([a for a in attributes for _ in range(c)]),
                      decode, lambda im: im.flatten(1), progress=False, steps=5, depth=2, batch_size=16, device="cpu")
    assert [(r["method"], r["seed"]) for r in rows] == [("paper", 0), ("paper", 1), ("bidirectional", 0), ("bidirectional", 1)]
    assert all(tuple(r) == SEED_COLUMNS for r in rows)
    checkpoints = sorted((tmp_path / "methods").iterdir())
    assert len(checkpoints) == 4                       # one cached network per (method, seed)
    papers = [torch.load(p, weights_only=True)["model"] for p in checkpoints if p.name.startswith("paper-")]
    assert any(not torch.equal(papers[0][k], papers[1][k]) for k in papers[0])   # the seed did change the training
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "methods").iterdir()}
    again = seed_study(["paper", "bidirectional"], [0, 1], train, seen, unseen, _Oracle([a for a in attributes for _ in range(c)]),
                       decode, lambda im: im.flatten(1), progress=False, steps=5, depth=2, batch_size=16, device="cpu")
    assert again == rows                               # loaded, not retrained: the same numbers
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "methods").iterdir()} == stamps
    with pytest.raises(ValueError, match="at least one"):
        seed_study([], [0], train, seen, unseen, None, decode, None)


def test_committed_seed_study():
    import csv
    import json
    from pathlib import Path

    from invcap.evaluation import SEED_COLUMNS
    from invcap.methods import METHODS

    results = Path(__file__).resolve().parents[1] / "results"
    with open(results / "seeds.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and tuple(rows[0]) == SEED_COLUMNS, "results/seeds.csv is stale: run `make paper`"
    assert {r["method"] for r in rows} <= set(METHODS)
    study = json.loads((results / "seeds.json").read_text())
    assert study["run"]["git_commit"] and study["run"]["config"]["seeds"]
    # every (method, seed) once, and the summary agrees with the rows
    assert len({(r["method"], r["seed"]) for r in rows}) == len(rows)
    for summary in study["summary"]:
        mine = [float(r["all_correct_unseen"]) for r in rows if r["method"] == summary["method"]]
        assert summary["seeds"] == len(mine)
        assert summary["all_correct_unseen_mean"] == pytest.approx(sum(mine) / len(mine), abs=1e-5)


def test_seed_study_command_explains_what_is_missing(tmp_path, monkeypatch):
    from invcap.notebook_tools import main, run_seed_study

    monkeypatch.setenv("INVCAP_RESULTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="05_closing_the_inversion_gap"):
        run_seed_study()
    assert main(["seed-study", "one"]) == 2


def test_goal_thresholds_and_image_captioner():
    from types import SimpleNamespace

    from invcap.evaluation import goal_thresholds, image_captioner

    assert goal_thresholds(33.0) == {"all_correct_seen": 95.0, "all_correct_unseen": 85.0, "captioning_r1": 28.0}
    seen = []
    reference = SimpleNamespace(caption=lambda latents: 2.0 * latents)

    def encode(batch):
        seen.append(batch.shape[0])
        return batch.flatten(1)
    images = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    out = image_captioner(reference, encode, batch_size=2)(images)
    assert torch.equal(out, 2.0 * images.flatten(1)) and seen == [2, 2, 1]   # encoded in batches, in order

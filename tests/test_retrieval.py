"""invcap.retrieval against brute-force references."""

import pytest
import torch

from invcap.retrieval import (cosine_similarity_matrix, ranks_from_similarity, recall_summary, relevance_matrix,
                              retrieval_metrics)


def _brute_rank(sim_row, relevant_row):
    order = sorted(range(len(sim_row)), key=lambda j: -float(sim_row[j]))
    best = max(float(sim_row[j]) for j in range(len(sim_row)) if relevant_row[j])
    return 1 + sum(float(sim_row[j]) > best for j in order)


def test_ranks_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    images, captions = torch.randn(12, 6, generator=gen), torch.randn(12, 5, 6, generator=gen)
    out = retrieval_metrics(images, captions, chunk=5)
    bank = captions.reshape(60, 6)
    sim = cosine_similarity_matrix(images, bank)
    assert torch.allclose(sim, torch.nn.functional.cosine_similarity(images[:, None].double(), bank[None].double(), dim=-1))
    rel = relevance_matrix(torch.arange(12).repeat_interleave(5), 12)
    ranks = torch.tensor([_brute_rank(sim[i], rel[i]) for i in range(12)])
    assert out["i2t"] == recall_summary(ranks)
    ranks_t = torch.tensor([_brute_rank(sim.T[j], rel.T[j]) for j in range(60)])
    assert out["t2i"]["R@1"] == pytest.approx(float((ranks_t <= 1).double().mean() * 100))
    assert out["chance"]["i2t_R@1"] == pytest.approx(5 / 60 * 100)


def test_perfect_embeddings_and_attribute_match():
    # Two images with identical captions: exact match cannot rank the right one first for both
    # directions' ties -> ties count for the query; attribute match makes them equivalent.
    captions = torch.eye(4)[[0, 0, 1, 2]][:, None, :].repeat(1, 2, 1)  # images 0 and 1 share captions
    images = captions[:, 0]
    exact = retrieval_metrics(images, captions)
    assert exact["i2t"]["R@1"] == 100.0 and exact["i2t"]["median_rank"] == 1
    labels = ["a", "a", "b", "c"]
    attr = retrieval_metrics(images, captions, labels=labels)
    assert attr["t2i"]["R@1"] == 100.0 and attr["protocol"] == "attribute match"
    rel = relevance_matrix(torch.tensor([0, 1, 2, 3]), 4, labels)
    assert rel.tolist()[0] == [True, True, False, False]


def test_recall_summary_values():
    out = recall_summary(torch.tensor([1, 2, 6, 11, 30]))
    assert out == {"R@1": 20.0, "R@5": 40.0, "R@10": 60.0, "median_rank": 6.0, "mean_rank": 10.0}


def test_bad_input():
    with pytest.raises(ValueError, match="same d"):
        cosine_similarity_matrix(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no relevant key"):
        ranks_from_similarity(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ValueError, match="labels"):
        relevance_matrix(torch.tensor([0, 1]), 2, ["a"])
    with pytest.raises(ValueError, match=r"\(N, C, d\)"):
        retrieval_metrics(torch.zeros(3, 4), torch.zeros(3, 4))


def test_top_k_and_labels():
    from invcap.retrieval import attribute_labels, top_k

    keys = torch.eye(3)
    assert top_k(torch.tensor([[0.1, 1.0, 0.5]]), keys, k=2).tolist() == [[1, 2]]
    assert attribute_labels([{"b": 1, "a": 2}, {"a": 2, "b": 1}]) == [(("a", 2), ("b", 1))] * 2

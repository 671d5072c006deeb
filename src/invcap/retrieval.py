"""Cross-modal retrieval metrics from embeddings (no models): the VSE++ protocol.

- image -> text: every image query ranks the whole caption bank by cosine similarity; its rank is
  the rank of its best-ranked relevant caption.
- text -> image: every caption query ranks all images; its rank is that of its best relevant image.

Relevance is either exact (a caption belongs to the image it was written for: Flickr30k) or, with
``labels``, by attribute match: a caption and an image match when the caption's source image has
the same label as the image. The embedded dataset needs the latter because several images share
the same attributes and therefore the very same captions, which exact matching could not tell apart.

Ranks are 1-based. Ties count in favour of the query (rank = 1 + number of candidates scoring
strictly higher than the best relevant one), so duplicate captions cannot push a correct one down.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import torch

from invcap.linalg import cosine_similarity_matrix, label_codes

__all__ = ["cosine_similarity_matrix", "relevance_matrix", "ranks_from_similarity", "recall_summary", "top_k",
           "attribute_labels", "retrieval_metrics"]

RECALL_AT = (1, 5, 10)


def relevance_matrix(caption_owner: torch.Tensor, n_images: int,
                     labels: Sequence[Hashable] | None = None) -> torch.Tensor:
    """(n_images, n_captions) boolean: caption j is relevant to image i.

    caption_owner[j] is the index of the image caption j was written for. With ``labels``
    (one hashable per image), relevance is labels[i] == labels[caption_owner[j]]."""
    owner = torch.as_tensor(caption_owner, dtype=torch.long)
    if owner.numel() and (int(owner.min()) < 0 or int(owner.max()) >= n_images):
        raise ValueError(f"caption_owner must index images 0..{n_images - 1}")
    if labels is None:
        return torch.arange(n_images)[:, None] == owner[None, :]
    if len(labels) != n_images:
        raise ValueError(f"{len(labels)} labels for {n_images} images")
    image_code, _ = label_codes(labels)
    return image_code[:, None] == image_code[owner][None, :]


def ranks_from_similarity(similarity: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best relevant key for every query row; every query needs one."""
    if similarity.shape != relevant.shape:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevance {tuple(relevant.shape)} differ in shape")
    missing = (~relevant.any(dim=1)).nonzero().flatten()
    if missing.numel():
        raise ValueError(f"{missing.numel()} queries have no relevant key (first: {missing[:5].tolist()})")
    best = similarity.masked_fill(~relevant, float("-inf")).max(dim=1, keepdim=True).values
    return (similarity > best).sum(dim=1) + 1


def recall_summary(ranks: torch.Tensor, ks: Sequence[int] = RECALL_AT) -> dict[str, float]:
    """Recall@K in percent, median and mean rank (1-based ranks in)."""
    ranks = ranks.double()
    out = {f"R@{k}": float((ranks <= k).double().mean() * 100) for k in ks}
    out["median_rank"] = float(ranks.median())
    out["mean_rank"] = float(ranks.mean())
    return out


def retrieval_metrics(image_embeddings: torch.Tensor, caption_embeddings: torch.Tensor,
                      labels: Sequence[Hashable] | None = None, chunk: int = 1024) -> dict[str, dict[str, float]]:
    """Both directions of the VSE++ protocol.

    image_embeddings: (N, d) image-side vectors in the caption space (e.g. f(z));
    caption_embeddings: (N, C, d), C captions per image, all N*C captions form the bank.
    labels: None for exact match, else one hashable per image for attribute match.
    Returns {"i2t": {...}, "t2i": {...}, "chance": {...}} with R@1/5/10 (%) and ranks; "chance"
    is R@1 of a random ranking (the fraction of relevant keys, averaged over queries), in percent.
    """
    if caption_embeddings.dim() != 3 or caption_embeddings.shape[0] != image_embeddings.shape[0]:
        raise ValueError(f"caption_embeddings must be (N, C, d) with N = {image_embeddings.shape[0]} images, "
                         f"got {tuple(caption_embeddings.shape)}")
    n, c, d = caption_embeddings.shape
    bank = caption_embeddings.reshape(n * c, d)
    owner = torch.arange(n).repeat_interleave(c)
    relevant = relevance_matrix(owner, n, labels)                     # (n, n*c)
    i2t = torch.cat([ranks_from_similarity(cosine_similarity_matrix(q, bank), r)
                     for q, r in zip(image_embeddings.split(chunk), relevant.split(chunk))])
    relevant_t = relevant.T.contiguous()
    t2i = torch.cat([ranks_from_similarity(cosine_similarity_matrix(q, image_embeddings), r)
                     for q, r in zip(bank.split(chunk), relevant_t.split(chunk))])
    chance = {"i2t_R@1": float(relevant.double().mean(dim=1).mean() * 100),
              "t2i_R@1": float(relevant_t.double().mean(dim=1).mean() * 100)}
    return {"i2t": recall_summary(i2t), "t2i": recall_summary(t2i), "chance": chance,
            "protocol": "attribute match" if labels is not None else "exact match"}


def top_k(queries: torch.Tensor, keys: torch.Tensor, k: int = 3) -> torch.Tensor:
    """(Q, k) indices of the k keys most cosine-similar to each query, best first."""
    return cosine_similarity_matrix(queries, keys).topk(min(k, keys.shape[0]), dim=1).indices


def attribute_labels(attributes: Sequence[dict]) -> list[tuple]:
    """One hashable label per image from its attribute dict (order of keys ignored), for
    ``retrieval_metrics(labels=...)``."""
    return [tuple(sorted(a.items())) for a in attributes]

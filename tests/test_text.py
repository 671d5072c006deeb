"""SentenceEncoder: the bundled MiniLM model offline, a disk cache that never re-encodes, clear errors."""

import pytest
import torch

from invcap import text as T


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return T.SentenceEncoder(device="cpu", cache_folder=tmp_path_factory.mktemp("emb"))


def test_dimension_is_read_from_the_model(encoder):
    assert encoder.dim == encoder.model.get_embedding_dimension() == 384


def test_matches_sentence_transformers_directly(encoder):
    texts = ["A small red circle in the top left corner.", "Two dogs play in the snow ."]
    ours = encoder.encode(texts, progress=False)
    ref = encoder.model.encode(texts, convert_to_tensor=True).cpu()
    assert ours.shape == (2, 384) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_cache_is_reused_across_instances_and_dedups(encoder, monkeypatch):
    texts = ["a big blue square.", "a tiny green cross.", "a big blue square."]
    calls = []
    original = T.SentenceEncoder._encode_uncached

    def counting(self, batch, *args):
        calls.append(list(batch))
        return original(self, batch, *args)

    monkeypatch.setattr(T.SentenceEncoder, "_encode_uncached", counting)
    first = encoder.encode(texts, progress=False)
    assert calls == [["a big blue square.", "a tiny green cross."]]  # the duplicate is encoded once
    torch.testing.assert_close(first[0], first[2], atol=0, rtol=0)
    again = T.SentenceEncoder(device="cpu", cache_folder=encoder.cache_folder)  # a fresh process, same disk
    second = again.encode(list(reversed(texts)) + ["a new caption."], progress=False)
    assert calls[1:] == [["a new caption."]]
    torch.testing.assert_close(second[:3], first.flip(0), atol=0, rtol=0)


def test_many_shards_are_merged_without_losing_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_MAX_SHARDS", 3)
    enc = T.SentenceEncoder(device="cpu", cache_folder=tmp_path)
    texts = [f"caption number {i}." for i in range(6)]
    vectors = [enc.encode([t], progress=False) for t in texts]
    assert len(list(tmp_path.glob("shard-*.pt"))) <= 3
    fresh = T.SentenceEncoder(device="cpu", cache_folder=tmp_path)
    torch.testing.assert_close(fresh.encode(texts, progress=False), torch.cat(vectors), atol=0, rtol=0)


def test_paraphrase_is_closer_than_another_attribute(encoder):
    a, b, c = encoder.encode(["a small red circle.", "a tiny red disc.", "a large blue square."], progress=False)
    cos = torch.nn.functional.cosine_similarity
    assert cos(a, b, dim=0) > cos(a, c, dim=0)


@pytest.mark.parametrize("bad, match", [(["ok", ""], r"texts\[1\] is empty"), (["ok", "  "], "empty"),
                                         (["ok", None], r"texts\[1\] is NoneType"), (["ok", 3], "int"),
                                         ("a single string", "wrap it")])
def test_bad_texts_raise_value_error(encoder, bad, match):
    with pytest.raises(ValueError, match=match):
        encoder.encode(bad, progress=False)


def test_empty_list_and_unknown_model():
    enc = T.SentenceEncoder(device="cpu", cache=False)
    assert enc.encode([], progress=False).shape == (0, 384)
    with pytest.raises(ValueError, match="cannot load sentence-transformers model"):
        T.SentenceEncoder("/nonexistent/model-folder", device="cpu")


def test_the_model_loads_only_for_texts_not_in_the_cache(encoder):
    texts = ["a lazy model.", "loads on first use."]
    encoder.encode(texts, progress=False)
    fresh = T.SentenceEncoder(device="cpu", cache_folder=encoder.cache_folder)
    assert fresh.dim == 384 and fresh.cache_key == encoder.cache_key and fresh._model is None
    torch.testing.assert_close(fresh.encode(texts, progress=False), encoder.encode(texts, progress=False), atol=0, rtol=0)
    assert fresh._model is None  # every text was cached: nothing loaded
    fresh.encode(["a text nobody encoded before."], progress=False)
    assert fresh._model is not None

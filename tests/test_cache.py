"""invcap.cache: one key covering configuration, data and code."""

import dataclasses
import importlib
import sys
import textwrap

import pytest
import torch

from invcap.cache import cache_key, cached_path, code_digest, tensor_digest


@dataclasses.dataclass
class Config:
    steps: int = 10
    lr: float = 1e-3
    widths: tuple = (16, 32)


def _module(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_editing_a_training_function_changes_the_key(tmp_path):
    train = _module(tmp_path, "fake_train_a", """
        def train(x):
            '''Train.'''
            return x * 2  # twice
    """).train
    before = cache_key(Config(), "data", [train])
    reworded = _module(tmp_path, "fake_train_a", """
        def train(x):
            '''Train the model (reworded docstring).'''
            return x * 2  # comment changed, formatting too
    """).train
    assert cache_key(Config(), "data", [reworded]) == before   # comments and docstrings do not count
    edited = _module(tmp_path, "fake_train_a", """
        def train(x):
            '''Train.'''
            return x * 3
    """).train
    assert cache_key(Config(), "data", [edited]) != before


def test_a_module_covers_every_function_in_it(tmp_path):
    first = _module(tmp_path, "fake_train_b", "def a():\n    return 1\n\ndef b():\n    return 2\n")
    key = cache_key({}, None, [first])
    second = _module(tmp_path, "fake_train_b", "def a():\n    return 1\n\ndef b():\n    return 5\n")
    assert cache_key({}, None, [second]) != key


def test_config_and_data_change_the_key():
    base = cache_key(Config(), "data-1")
    assert cache_key(Config(), "data-1") == base
    assert cache_key(Config(steps=11), "data-1") != base
    assert cache_key(Config(widths=(16, 64)), "data-1") != base
    assert cache_key(Config(), "data-2") != base
    assert cache_key({"b": 1, "a": 2}) == cache_key({"a": 2, "b": 1})   # order-free


def test_tensors_are_hashed_by_their_exact_bytes():
    x = torch.randn(50, 8)
    assert tensor_digest(x) == tensor_digest(x.clone())
    y = x.clone()
    y[3, 4] = torch.nextafter(y[3, 4], torch.tensor(float("inf")))   # one ulp
    assert tensor_digest(y) != tensor_digest(x)
    assert tensor_digest(x.double()) != tensor_digest(x)
    assert tensor_digest(x.T) != tensor_digest(x)   # shape counts
    assert cache_key({}, x) == cache_key({}, x.clone()) != cache_key({}, y)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="cannot hash"):
        cache_key({"f": object()})
    with pytest.raises(TypeError, match="source"):
        code_digest([len])   # a builtin has no Python source


def test_cached_path_is_safe_and_keyed(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    path = cached_path("methods", "bidirectional+projected", "abc123")
    assert path == tmp_path / "methods" / "bidirectional_projected-abc123.pt"
    assert path.parent.is_dir()

"""The procedural default dataset: deterministic, unambiguous attributes, a true compositional split."""

import json

import numpy as np
import pytest
import torch

from invcap.data import embedded as E

SMALL = {"train": 40, "val": 8, "test": 8, "compositional_val": 48, "compositional_test": 48}


def test_render_shape_range_and_determinism():
    a = {"shape": "triangle", "colour": "blue", "size": "large", "position": "bottom right"}
    x = E.render(a, 32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(E.render(a, 32), x)  # canonical without rng
    b1 = E.render_batch([a, a], 24, seed=3)
    assert b1.shape == (2, 3, 24, 24)
    assert torch.equal(b1, E.render_batch([a, a], 24, seed=3))
    assert not torch.equal(b1[0], b1[1])  # jitter differs between draws


def _object_mask(image):
    # background is grey (r == g == b); the object's colours are not
    return (image.max(0).values - image.min(0).values) > 0.3


@pytest.mark.parametrize("position", E.ATTRIBUTES["position"])
def test_object_stays_in_its_quadrant_under_jitter(position):
    rng = np.random.default_rng(0)
    for shape in E.ATTRIBUTES["shape"]:
        a = {"shape": shape, "colour": "red", "size": "large", "position": position}
        for _ in range(20):
            mask = _object_mask(E.render(a, 32, rng))
            ys, xs = mask.nonzero(as_tuple=True)
            assert len(xs) > 0
            left, top = position.split()[1] == "left", position.split()[0] == "top"
            assert (xs.max() < 16) if left else (xs.min() >= 16)
            assert (ys.max() < 16) if top else (ys.min() >= 16)


def test_size_classes_do_not_overlap_under_jitter():
    rng = np.random.default_rng(1)
    areas = {}
    for size in E.ATTRIBUTES["size"]:
        a = {"shape": "square", "colour": "green", "size": size, "position": "top left"}
        areas[size] = [float(_object_mask(E.render(a, 64, rng)).sum()) for _ in range(30)]
    assert max(areas["small"]) < min(areas["medium"])
    assert max(areas["medium"]) < min(areas["large"])


def test_colours_are_their_names():
    for colour, channel in [("red", 0), ("green", 1), ("blue", 2)]:
        x = E.render({"shape": "circle", "colour": colour, "size": "large", "position": "top left"}, 32)
        centre = x[:, 8, 8]
        assert int(centre.argmax()) == channel


def test_describe_states_every_attribute_in_five_different_captions():
    from invcap.data.wording import TRAINING

    rng = np.random.default_rng(0)
    for a in E.all_combinations():
        caps = E.describe(a, rng)
        assert len(caps) == 5 and len(set(caps)) == 5
        assert all(TRAINING.parse(c) == a for c in caps)


def test_compositional_holdout_is_disjoint_and_keeps_every_value_in_training():
    combos = E.all_combinations()
    assert len(combos) == 4 * 4 * 3 * 4
    split = E.split_combinations()
    held = E.compositional_holdout()
    assert len(held) == 48 and split["unseen"] == held
    assert not any(c in split["seen"] for c in held)
    for key, values in E.ATTRIBUTES.items():
        assert {c[key] for c in split["seen"]} == set(values)


def test_bad_attributes_raise():
    with pytest.raises(ValueError, match="colour"):
        E.render({"shape": "circle", "colour": "purple", "size": "small", "position": "top left"})
    with pytest.raises(ValueError, match="lack"):
        E.describe({"shape": "circle"}, np.random.default_rng(0))


def test_make_embedded_dataset_layout_and_reuse(tmp_path):
    root = E.make_embedded_dataset(tmp_path / "emb", seed=5, image_size=16, split_sizes=SMALL)
    files = sorted(p.name for p in (root / "flickr30k_images").iterdir())
    assert len(files) == sum(SMALL.values())
    lines = (root / "results.csv").read_text().splitlines()
    assert lines[0] == "image_name| comment_number| comment"
    assert len(lines) == 1 + 5 * len(files)
    karpathy = json.loads((root / "dataset_flickr30k.json").read_text())
    splits = [im["split"] for im in karpathy["images"]]
    assert {s: splits.count(s) for s in SMALL} == SMALL
    attrs = json.loads((root / "attributes.json").read_text())
    held = E.compositional_holdout()
    for im in karpathy["images"]:
        assert (attrs[im["filename"]] in held) == (im["split"] in E.COMPOSITIONAL_SPLITS)
    # both compositional splits cover all 48 held-out combinations, on different images
    names = {s: {im["filename"] for im in karpathy["images"] if im["split"] == s} for s in SMALL}
    for split in E.COMPOSITIONAL_SPLITS:
        assert sorted(map(str, (attrs[f] for f in names[split]))) == sorted(map(str, held))
    assert not names["compositional_val"] & names["compositional_test"]
    # mentions.json: per caption, what it states; the caption parses back to exactly that
    from invcap.data.wording import TRAINING

    mentions = json.loads((root / "mentions.json").read_text())
    for im in karpathy["images"]:
        a = attrs[im["filename"]]
        for sentence, said in zip(im["sentences"], mentions[im["filename"]]):
            assert TRAINING.parse(sentence["raw"]) == {k: a[k] for k in said}
        assert any(len(said) == 4 for said in mentions[im["filename"]])  # one full caption at least
    # reuse: nothing is rewritten
    stamp = (root / "results.csv").stat().st_mtime_ns
    assert E.make_embedded_dataset(tmp_path / "emb", seed=5, image_size=16, split_sizes=SMALL) == root
    assert (root / "results.csv").stat().st_mtime_ns == stamp
    # same seed, same bytes; a different config in the same folder is an error
    other = E.make_embedded_dataset(tmp_path / "emb2", seed=5, image_size=16, split_sizes=SMALL)
    assert (other / "results.csv").read_text() == (root / "results.csv").read_text()
    assert (other / "flickr30k_images" / files[0]).read_bytes() == (root / "flickr30k_images" / files[0]).read_bytes()
    with pytest.raises(ValueError, match="different configuration"):
        E.make_embedded_dataset(tmp_path / "emb", seed=6, image_size=16, split_sizes=SMALL)
    with pytest.raises(ValueError, match="compositional_val"):
        E.make_embedded_dataset(tmp_path / "emb3", split_sizes={"train": 4, "compositional": 4})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_dataset_key_covers_the_generator_code(monkeypatch):
    key = E.dataset_key(seed=0)
    assert key == E.dataset_key(seed=0) and key != E.dataset_key(seed=1)
    import invcap.cache as C
    from invcap.data import wording

    seen = {}
    monkeypatch.setattr(C, "cache_key", lambda config, data=None, code=(): seen.setdefault("code", code) and "k")
    E.dataset_key(seed=0)
    assert {E.render, E._mask, E._plan, E._write_dataset, wording} <= set(seen["code"])

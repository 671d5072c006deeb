"""The Flickr30k-shaped rehearsal set, and the loader on every fault it plants (small sets written here)."""

import json
import warnings

import pytest
import torch
from PIL import Image

from invcap.data import rehearsal as R
from invcap.data.flickr30k import UInt8Images, load_flickr30k, read_kaggle_csv, read_karpathy_json

N = 40


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal") / "flickr30k"
    manifest = R.make_rehearsal(out, R.RehearsalConfig(images=N, seed=3), workers=1, progress=False)
    return out, manifest


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    import invcap.data.flickr30k as F

    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(F, "_WARNED", set())  # each test sees the loader's warnings afresh


def _files(out):
    return sorted((out / R.IMAGE_DIR).iterdir())


def test_layout_annotations_and_quirks(small_set):
    out, manifest = small_set
    lines = (out / "flickr30k_images" / "results.csv").read_text().splitlines()
    assert lines[0] == "image_name| comment_number| comment"
    assert len(lines) == 1 + 5 * N and all("| " in line for line in lines[1:])
    malformed = [line for line in lines if line.startswith(R.KNOWN_MALFORMED)]
    assert len(malformed) == 5 and malformed[4].startswith(f"{R.KNOWN_MALFORMED}| 4   ")  # separator missing
    assert all(line.endswith(" .") for line in lines[1:])  # Kaggle's tokenised form
    captions = read_kaggle_csv(out / "flickr30k_images" / "results.csv")
    assert len(captions) == N and all(len(c) == 5 for c in captions.values())
    karpathy, splits = read_karpathy_json(out / "dataset_flickr30k.json")
    sizes = R.split_sizes(N)
    assert {s: list(splits.values()).count(s) for s in sizes} == sizes
    assert len(karpathy) == sum(sizes.values()) == manifest["counts"]["karpathy_images"]
    raw = json.loads((out / "dataset_flickr30k.json").read_text())["images"][0]["sentences"][0]
    assert raw["raw"].endswith(".") and not raw["raw"].endswith(" .") and "." not in raw["tokens"]
    words = [len(c.split()) - 1 for caps in captions.values() for c in caps]
    assert 9 <= sum(words) / len(words) <= 15  # Flickr30k's captions average about 12 words
    assert manifest["counts"]["captions"] == 5 * N


def test_full_size_proportions():
    assert R.split_sizes(R.FULL_SIZE) == {"train": 29000, "val": 1014, "test": 1000}
    assert sum(R.fault_plan(R.RehearsalConfig()).values(), []) != []


def test_images_have_flickr_sizes_and_the_planted_faults(small_set):
    out, manifest = small_set
    faults = manifest["faults"]
    assert not (out / R.IMAGE_DIR / faults["missing"][0]).exists()
    assert len(_files(out)) == N - 1
    for path in _files(out):
        data = path.read_bytes()
        if path.name in faults["png_named_jpg"]:
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            continue
        assert data[:2] == b"\xff\xd8"
        if path.name in faults["truncated"]:
            assert data[-2:] != b"\xff\xd9"
            continue
        with Image.open(path) as image:
            assert max(image.size) == 500 and min(image.size) >= 281
            expected = "L" if path.name in faults["greyscale"] else "CMYK" if path.name in faults["cmyk"] else "RGB"
            assert image.mode == expected


def test_scenes_and_captions_name_part_of_the_picture():
    config = R.RehearsalConfig(images=N, seed=3)
    counts = set()
    for i in range(N):
        sc = R.scene(config, i)
        counts.add(len(sc["objects"]))
        kinds = {o["kind"] for o in sc["objects"]}
        for caption in R.captions_for(config, i, sc):
            named = {k for k in R.KINDS if k in caption.split()}
            assert named <= kinds  # never an object that is not there
    assert counts == {1, 2, 3}
    a, b = {"centre": (10.0, 50.0)}, {"centre": (90.0, 40.0)}
    assert R.relation(a, b) == "to the left of" and R.relation(b, a) == "to the right of"


def test_deterministic_by_seed_reused_and_resumable(tmp_path):
    config = R.RehearsalConfig(images=20, seed=1)
    one, two = tmp_path / "one", tmp_path / "two"
    R.make_rehearsal(one, config, workers=1, progress=False)
    R.make_rehearsal(two, config, workers=2, progress=False)  # which worker draws an image never matters
    assert [p.read_bytes() for p in _files(one)] == [p.read_bytes() for p in _files(two)]
    assert (one / "dataset_flickr30k.json").read_bytes() == (two / "dataset_flickr30k.json").read_bytes()
    assert R.make_rehearsal(one, config, progress=False)["reused"]
    # a killed run: some images and the manifest never written; the rerun completes the same set
    victims = _files(two)[:5]
    for path in victims:
        path.unlink()
    (two / "rehearsal.json").unlink()
    resumed = R.make_rehearsal(two, config, workers=1, progress=False)
    assert resumed["images_written_this_run"] == 5
    assert [p.read_bytes() for p in _files(one)] == [p.read_bytes() for p in _files(two)]
    with pytest.raises(ValueError, match="another configuration"):
        R.make_rehearsal(one, R.RehearsalConfig(images=20, seed=2), progress=False)
    other = R.make_rehearsal(tmp_path / "three", R.RehearsalConfig(images=20, seed=2), workers=1, progress=False)
    assert other["faults"] != resumed["faults"] or _files(tmp_path / "three")[0].read_bytes() != _files(one)[0].read_bytes()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        R.make_rehearsal(tmp_path / "busy", config, progress=False)
    with pytest.raises(ValueError, match="images must be"):
        R.RehearsalConfig(images=5)


def test_loader_skips_and_converts_every_fault_with_counts(small_set):
    out, manifest = small_set
    faults = manifest["faults"]
    with pytest.warns(UserWarning) as caught:
        data = load_flickr30k(out, image_size=16, progress=False)
    messages = [str(w.message) for w in caught]
    listed = manifest["counts"]["karpathy_images"]
    assert any(f"skipped 2 of {listed} images" in m and "1 missing, 1 truncated" in m for m in messages)
    converted = [m for m in messages if m.startswith("converted")]
    assert len(converted) == 1 and "2 greyscale" in converted[0] and "1 CMYK" in converted[0]
    assert "1 PNG named .jpg" in converted[0]
    assert data.skipped == {faults["missing"][0]: "missing", faults["truncated"][0]: data.skipped[faults["truncated"][0]]}
    assert "truncated" in data.skipped[faults["truncated"][0]]
    assert set(data.converted) == set(faults["greyscale"] + faults["cmyk"] + faults["png_named_jpg"])
    assert len(data) == listed - 2 and not set(data.filenames) & set(data.skipped)
    pixels = data.decode(progress=False)
    assert pixels.shape == (len(data), 3, 16, 16) and pixels.dtype == torch.uint8
    grey = data.filenames.index(faults["greyscale"][0])
    assert torch.equal(pixels[grey, 0], pixels[grey, 1])  # converted to RGB: three equal channels
    # the Kaggle file alone (no splits): every image, the same faults
    with pytest.warns(UserWarning, match="skipped 2 of 40"):
        kaggle = load_flickr30k(out / "flickr30k_images" / "results.csv", image_size=16, progress=False)
    assert len(kaggle) == N - 2


def test_check_verdicts_are_cached_and_follow_file_changes(small_set, tmp_path, monkeypatch):
    out, manifest = small_set
    import PIL.Image

    with pytest.warns(UserWarning):
        load_flickr30k(out, split="train", image_size=16, progress=False)
    opened = []
    real = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        load_flickr30k(out, split="train", image_size=16, progress=False)
    assert again == []  # each warning is given once per process
    assert opened == []  # every verdict came from the cache: no file was opened
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy)
    with pytest.warns(UserWarning, match="skipped 2 of"):
        load_flickr30k(copy, image_size=16, progress=False)
    victim = copy / R.IMAGE_DIR / manifest["faults"]["greyscale"][0]
    victim.write_bytes(victim.read_bytes()[:300])  # now truncated: size changed, so it is checked again
    with pytest.warns(UserWarning) as caught:
        load_flickr30k(copy, image_size=16, progress=False)
    assert any("skipped 3 of" in str(w.message) for w in caught)


def test_uint8_view_converts_only_what_is_asked():
    pixels = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    view = UInt8Images(pixels)
    assert len(view) == 2 and view.shape == (2, 3, 4, 4) and view.dim() == 4
    torch.testing.assert_close(view[1], pixels[1].float() / 255)
    torch.testing.assert_close(view[0:2], pixels.float() / 255)
    torch.testing.assert_close(torch.stack([view[0], view[1]]), pixels.float() / 255)
    torch.testing.assert_close(view.double(), pixels.double() / 255)  # whole-split fallbacks still work
    assert bool(torch.isfinite(view).all())
    assert isinstance(view.to("cpu"), UInt8Images) and view.to(torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="uint8"):
        UInt8Images(pixels.float())

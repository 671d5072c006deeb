"""Flickr30k loaders on small fixtures written here, in each format, quirks included."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from invcap.data import embedded_dataset, load_flickr30k
from invcap.data.flickr30k import read_kaggle_csv, read_token_file

# 6 images x 5 captions; one caption contains "|", and image 3's last row is Kaggle's malformed row.
NAMES = ["1000092795.jpg", "10002456.jpg", "1000268201.jpg", "2199200615.jpg", "1000344755.jpg", "1000366164.jpg"]
CAPTIONS = {n: [f"Caption {k} of {n} , with words ." for k in range(5)] for n in NAMES}
CAPTIONS[NAMES[1]][2] = "A sign reads left | right ."
CAPTIONS[NAMES[3]][4] = "A dog runs across the grass ."
SPLITS = dict(zip(NAMES, ["train", "train", "train", "val", "test", "test"]))


def _write_images(folder, names=NAMES, size=(50, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / n, format="JPEG")


def write_kaggle(root):
    d = root / "flickr30k_images"
    _write_images(d / "flickr30k_images")
    lines = ["image_name| comment_number| comment"]
    for n in NAMES:
        for k, c in enumerate(CAPTIONS[n]):
            if n == "2199200615.jpg" and k == 4:
                lines.append(f"{n}| 4   {c}")  # the known broken row: no separator after the number
            else:
                lines.append(f"{n}| {k}| {c}")
    (d / "results.csv").write_text("\n".join(lines) + "\n")


def write_karpathy(root):
    _write_images(root / "flickr30k-images")
    images = [{"filename": n, "imgid": i, "split": SPLITS[n], "sentids": [5 * i + k for k in range(5)],
               "sentences": [{"raw": c, "tokens": c.split(), "imgid": i, "sentid": 5 * i + k}
                             for k, c in enumerate(CAPTIONS[n])]} for i, n in enumerate(NAMES)]
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))


def write_token(root):
    _write_images(root / "flickr30k-images")
    lines = [f"{n}#{k}\t{c}" for n in NAMES for k, c in enumerate(CAPTIONS[n])]
    lines[3], lines[4] = lines[4], lines[3]  # caption numbers, not line order, give the order
    (root / "results_20130124.token").write_text("\n".join(lines) + "\n")


WRITERS = {"kaggle": write_kaggle, "karpathy": write_karpathy, "token": write_token}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_each_format_loads_its_fixture_exactly(tmp_path, fmt):
    WRITERS[fmt](tmp_path)
    data = load_flickr30k(tmp_path, image_size=16)
    assert len(data) == len(NAMES) and data.filenames == NAMES
    assert data.captions == [CAPTIONS[n] for n in NAMES]
    assert sum(map(len, data.captions)) == 30
    image, captions = data[3]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert captions[-1] == "A dog runs across the grass ."
    assert data.attributes is None and data.skipped == {}
    if fmt == "karpathy":
        assert data.splits == [SPLITS[n] for n in NAMES]
        for split, count in [("train", 3), ("val", 1), ("test", 2)]:
            part = load_flickr30k(tmp_path, split=split, image_size=16)
            assert len(part) == count and set(part.splits) == {split}
            assert part.captions == [CAPTIONS[n] for n in NAMES if SPLITS[n] == split]
    else:
        assert data.splits is None
        with pytest.raises(ValueError, match="carries no splits"):
            load_flickr30k(tmp_path, split="train")


def test_kaggle_malformed_row_and_pipe_in_caption(tmp_path):
    write_kaggle(tmp_path)
    table = read_kaggle_csv(tmp_path / "flickr30k_images" / "results.csv")
    assert table["2199200615.jpg"][4] == "A dog runs across the grass ."
    assert table["10002456.jpg"][2] == "A sign reads left | right ."


def test_bad_lines_name_their_line(tmp_path):
    bad = tmp_path / "results.csv"
    bad.write_text("image_name| comment_number| comment\na.jpg| 0| ok\nnonsense line\n")
    with pytest.raises(ValueError, match=r"results.csv:3"):
        read_kaggle_csv(bad)
    token = tmp_path / "results_20130124.token"
    token.write_text("a.jpg#0\tok\na.jpg caption without tab\n")
    with pytest.raises(ValueError, match=r"token:2"):
        read_token_file(token)


def test_wrong_split_and_missing_paths_are_clear(tmp_path):
    write_karpathy(tmp_path)
    with pytest.raises(ValueError, match="has \\['test', 'train', 'val'\\]"):
        load_flickr30k(tmp_path, split="restval")
    with pytest.raises(FileNotFoundError, match="does not exist.*kaggle.com"):
        load_flickr30k(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset_flickr30k.json, results.csv, results_20130124.token"):
        load_flickr30k(tmp_path / "empty")
    # annotations without their images
    (tmp_path / "noimg").mkdir()
    (tmp_path / "noimg" / "dataset_flickr30k.json").write_text((tmp_path / "dataset_flickr30k.json").read_text())
    with pytest.raises(FileNotFoundError, match="none of their images"):
        load_flickr30k(tmp_path / "noimg")


def test_unreadable_and_missing_images_are_skipped_with_a_count(tmp_path):
    write_token(tmp_path)
    folder = tmp_path / "flickr30k-images"
    (folder / NAMES[1]).write_bytes(b"not an image at all")
    (folder / NAMES[2]).unlink()
    with pytest.warns(UserWarning, match="skipped 2 of 6"):
        data = load_flickr30k(tmp_path, image_size=16)
    assert len(data) == 4 and set(data.skipped) == {NAMES[1], NAMES[2]}
    assert data.skipped[NAMES[2]] == "missing"
    assert data.stack_images(batch_size=3, progress=False).shape == (4, 3, 16, 16)


def test_truncated_png_is_caught_by_the_header_check(tmp_path):
    write_token(tmp_path)
    folder = tmp_path / "flickr30k-images"
    path = folder / NAMES[0]
    Image.fromarray(np.full((30, 30, 3), 128, np.uint8)).save(path, format="PNG")
    path.write_bytes(path.read_bytes()[:-30])  # cut into the IDAT/IEND chunks
    with pytest.warns(UserWarning, match="skipped 1 of 6"):
        load_flickr30k(tmp_path, image_size=16)


def test_embedded_default_reads_through_the_same_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    from invcap.data import embedded as E

    monkeypatch.setattr(E, "SPLIT_SIZES", {"train": 30, "val": 6, "test": 6, "compositional_val": 10, "compositional_test": 10})
    full = embedded_dataset(image_size=16, seed=2)
    assert len(full) == 62 and full.annotation_file.name == "dataset_flickr30k.json"
    comp = embedded_dataset(split="compositional_test", image_size=16, seed=2)
    assert len(comp) == 10 and all(a in E.compositional_holdout() for a in comp.attributes)
    assert len(comp.mentions) == 10 and all(len(m) == 5 for m in comp.mentions)
    train = embedded_dataset(split="train", image_size=16, seed=2)
    assert not any(a in E.compositional_holdout() for a in train.attributes)
    # the Kaggle CSV written beside it says the same thing
    csv = read_kaggle_csv(full.annotation_file.parent / "results.csv")
    assert [csv[f] for f in full.filenames] == full.captions
    # pixels round-trip through PNG: within 1/255 of the renderer
    image, captions = train[0]
    rendered = E.render(train.attributes[0], 16)
    assert image.shape == rendered.shape and len(captions) == 5
    assert float((image - rendered).abs().mean()) < 0.05  # only jitter differs


def test_root_may_name_the_annotation_file(tmp_path):
    write_kaggle(tmp_path)
    data = load_flickr30k(tmp_path / "flickr30k_images" / "results.csv", image_size=16)
    assert data.filenames == NAMES

"""`python -m invcap generate` end to end, on a tiny untrained generator saved like notebook 05's."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from invcap.autoencoder import AutoencoderConfig
from invcap.captioning import CaptioningConfig, build_network
from invcap.generator import save_generator
from invcap.linalg import principal_directions
from invcap.methods import LatentPrior, Method, PaddedInverse, TrainedMethod
from invcap.text import DEFAULT_MODEL

CAPTION = "a small red circle at the top left"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    ae_config = AutoencoderConfig(latent_dim=384, image_size=32, widths=(4, 8, 8))
    autoencoder = ae_config.model().eval()
    spec = Method("tiny", "untrained, for the CLI test", (LatentPrior(), PaddedInverse()), {"depth": 1}, latent_dims=4)
    config = CaptioningConfig(depth=1, init_std=0.1, device="cpu")
    space = principal_directions(torch.randn(50, 384, generator=torch.Generator().manual_seed(1)) * 0.05)
    trained = TrainedMethod(spec, build_network(384, config).eval(), config, space)
    path = tmp_path_factory.mktemp("generator") / "tiny.pt"
    save_generator(path, trained, autoencoder, vars(ae_config), DEFAULT_MODEL)
    return path


def _run(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INVCAP_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "invcap", "generate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_generate_writes_pngs_of_the_stated_size(checkpoint, tmp_path):
    result = _run(CAPTION, "--out", str(tmp_path / "out" / "image.png"), "--samples", "2",
                  "--checkpoint", str(checkpoint), "--scale", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    paths = [tmp_path / "out" / "image-1.png", tmp_path / "out" / "image-2.png"]
    assert result.stdout.split() == [str(p) for p in paths]   # it says where they went
    arrays = []
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (128, 128) and image.mode == "RGB"   # 32 x 32 upsampled 4x
            arrays.append(torch.from_numpy(np.asarray(image).copy()))
    assert not torch.equal(arrays[0], arrays[1])   # the latent gives two different samples
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_empty_caption_is_a_clear_error(checkpoint, tmp_path):
    result = _run("   ", "--out", str(tmp_path / "x.png"), "--checkpoint", str(checkpoint), cwd=tmp_path)
    assert result.returncode == 2 and "caption is empty" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.png").exists()


def test_missing_checkpoint_names_the_make_target(tmp_path):
    result = _run(CAPTION, "--out", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "nope.pt"), cwd=tmp_path)
    assert result.returncode == 2 and "make generator" in result.stderr and "nope.pt" in result.stderr
    default = _run(CAPTION, "--out", str(tmp_path / "x.png"), cwd=tmp_path)   # empty cache: default path
    assert default.returncode == 2 and "make generator" in default.stderr


def test_bad_options_are_clear_errors(checkpoint, tmp_path):
    for args, message in [(["--samples", "0"], "--samples"), (["--out", str(tmp_path / "x.jpg")], ".png")]:
        result = _run(CAPTION, "--checkpoint", str(checkpoint), *args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    result = _run(CAPTION, "--out", str(tmp_path / "x.png"), "--checkpoint", str(broken), cwd=tmp_path)
    assert result.returncode == 2 and "make generator" in result.stderr and "Traceback" not in result.stderr


def test_train_generator_rejects_bad_options_before_any_work(tmp_path, monkeypatch, capsys):
    from invcap.__main__ import main

    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("INVCAP_RESULTS_DIR", str(tmp_path / "results"))
    assert main(["train-generator", "--steps", "0"]) == 2 and "--steps" in capsys.readouterr().err
    assert main(["train-generator", "--method", "nope"]) == 2 and "unknown method" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_selected_generator_carries_the_weights_chosen_on_validation(tmp_path):
    import json

    from invcap.generator import DEFAULT_GENERATOR, selected_generator
    from invcap.methods import Inverse, method

    assert selected_generator(tmp_path)["weights"] is None and selected_generator(tmp_path)["method"] == DEFAULT_GENERATOR
    chosen = {"method": DEFAULT_GENERATOR, "steps": 1200, "lr": 3e-3, "seed": 0, "weights": {"Inverse": 10.0}}
    (tmp_path / "final_table.json").write_text(json.dumps({"generator": chosen}))
    picked = selected_generator(tmp_path)
    assert picked["steps"] == 1200 and picked["weights"] == {"Inverse": 10.0}
    assert method(picked["method"]).reweighted(picked["weights"]).term(Inverse).weight == 10.0

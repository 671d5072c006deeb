"""Every committed figure exists, is a PNG of sensible size and is not blank. nbval ignores
images, so this is where the notebooks' figures are checked. `make paper` writes them."""

from pathlib import Path

import pytest
from PIL import Image

FIGURES_DIR = Path(__file__).resolve().parents[1] / "figures"

# figure -> what writes it (a notebook, or the step `make paper` runs after them)
FIGURES = {
    "01_fits.png": "01_toy_invertibility",
    "01_errors.png": "01_toy_invertibility",
    "01_conditioning.png": "01_toy_invertibility",
    "02_samples.png": "02_autoencoder",
    "02_caption_similarity.png": "02_autoencoder",
    "02_autoencoder_training.png": "02_autoencoder",
    "02_reconstructions.png": "02_autoencoder",
    "03_loss_curves.png": "03_captioning",
    "03_retrieved_captions.png": "03_captioning",
    "04_generation_grid.png": "04_inversion_analysis",
    "04_user_captions.png": "04_inversion_analysis",
    "04_noise_sweep.png": "04_inversion_analysis",
    "04_conditioning.png": "04_inversion_analysis",
    "05_ablation.png": "05_closing_the_inversion_gap",
    "05_generated_grid.png": "05_closing_the_inversion_gap",
    "05_samples.png": "05_closing_the_inversion_gap",
    "05_seeds.png": "python -m invcap.notebook_tools seed-study",
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_exists_with_sensible_size(name):
    path = FIGURES_DIR / name
    writer = FIGURES[name] if FIGURES[name].startswith("python") else f"notebooks/{FIGURES[name]}.ipynb"
    assert path.is_file(), f"{name} missing: run {writer} (make paper)"
    with Image.open(path) as image:
        assert image.format == "PNG", f"{name} is {image.format}, not PNG"
        width, height = image.size
        assert 300 <= width <= 4000 and 150 <= height <= 4000, (name, width, height)
        colours = image.convert("RGB").resize((64, 64)).getcolors(64 * 64)
        assert colours is None or len(colours) > 20, f"{name} looks blank"


def test_every_committed_figure_is_listed():
    on_disk = {path.name for path in FIGURES_DIR.glob("*.png")}
    assert on_disk == set(FIGURES), f"unlisted or missing figures: {on_disk ^ set(FIGURES)}"

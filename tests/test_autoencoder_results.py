"""Notebook 02's committed results: results/autoencoder.json carries its run record and meets
the issue's goal (its figures are checked in test_figures.py)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_results_file_has_run_record_and_goal():
    record = json.loads((ROOT / "results" / "autoencoder.json").read_text())
    for key in ("config", "seed", "versions", "device", "git_commit", "timings"):
        assert key in record["run"]
    assert "metrics" in record
    assert record["latent_dim"] == record["embedding_dim"] == 384
    assert record["latent_shape"][0] * record["latent_shape"][1] * record["latent_shape"][2] == 384
    test = record["metrics"]["test"]
    assert record["goal"]["met"] == (test["psnr_db"] >= 25.0)
    assert test["psnr_db"] >= 25.0, f"test PSNR {test['psnr_db']:.1f} dB misses the 25 dB goal"
    assert 0.0 < test["ssim"] <= 1.0 and test["mse"] > 0

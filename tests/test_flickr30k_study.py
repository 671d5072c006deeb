"""make flickr30k's driver (stages, check) and the rehearsal measurement's README block, on small inputs."""

import json
import sys

import pytest

from invcap.studies import flickr30k as F
from invcap.studies import flickr30k_rehearsal as FR


def test_run_child_reports_time_exit_code_and_peak_memory(tmp_path):
    code, seconds, peak = F.run_child([sys.executable, "-c", "x = bytearray(80 * 2**20); print(len(x))"],
                                      log=tmp_path / "log")
    assert code == 0 and seconds > 0 and peak >= 80  # MB, the child's own allocation included
    assert (tmp_path / "log").read_text().strip() == str(80 * 2**20)
    assert F.run_child([sys.executable, "-c", "raise SystemExit(3)"])[0] == 3


def _notebook(path, outputs):
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "1", "outputs": outputs}]}))


def test_check_flags_errors_missing_notebooks_and_incomplete_run_records(tmp_path):
    ok = [{"output_type": "stream", "name": "stdout", "text": "fine"}]
    for name in F.NOTEBOOKS:
        _notebook(tmp_path / f"{name}.ipynb", ok)
    (tmp_path / "results").mkdir()
    good = {"run": {"data": "flickr30k:/x/dataset_flickr30k.json:1:2:32", "device": {"type": "cpu"},
                    "timings": {"train": 1.0}}}
    (tmp_path / "results" / "captioning.json").write_text(json.dumps(good))
    (tmp_path / "results" / "notebooks.json").write_text("{}")
    assert F.check_run(tmp_path) == []
    _notebook(tmp_path / "03_captioning.ipynb", [{"output_type": "error", "ename": "ValueError", "evalue": "OLS"}])
    (tmp_path / "results" / "inversion.json").write_text(json.dumps({"run": {"data": None, "device": {}, "timings": {}}}))
    (tmp_path / F.NOTEBOOKS[-1]).with_suffix(".ipynb").unlink()
    problems = "\n".join(F.check_run(tmp_path))
    assert "03_captioning.ipynb: ValueError: OLS" in problems and "05_closing_the_inversion_gap.ipynb is missing" in problems
    assert "inversion.json: run.data is None" in problems and "inversion.json: run.timings empty" in problems


def test_projection_scales_by_length_and_assumed_speedup():
    stages = {"03_captioning": {"seconds": 110.0}, "images": {"seconds": 70.0}, "unknown": {"seconds": 5.0}}
    lengths = {"03_captioning": {"knob": "STEPS", "cpu": 300, "full": 3000, "ratio": 10.0}}
    out = FR.projection(stages, lengths)
    speed = FR.GPU_ASSUMPTIONS
    assert out["03_captioning"] == pytest.approx(FR.STARTUP_SECONDS + 100.0 * 10 / speed["03_captioning"][0], abs=0.1)
    assert out["images"] == pytest.approx(FR.STARTUP_SECONDS + 60.0 / speed["images"][0], abs=0.1)
    assert "unknown" not in out


def test_readme_block_renders_from_the_results_file(tmp_path):
    assert "Not measured yet" in FR.render_block(tmp_path)
    result = {"run": {"device": {"name": "x86_64", "threads": 2}, "git_commit": "0123456789abcdef"},
              "images": 31783, "captions": 158915, "image_size": 64, "total_seconds": 3000.0,
              "stages": {"rehearsal": {"status": "done", "seconds": 200.0, "peak_rss_mb": 300},
                         "03_captioning": {"status": "done", "seconds": 900.0, "peak_rss_mb": 4000}},
              "peak_rss_mb": 4000, "goal_peak_rss_mb": 8192, "goal_met": True,
              "shortened": {"03_captioning": {"knob": "STEPS", "cpu": 300, "full": 10000, "ratio": 33.3}},
              "gpu_projection_seconds": {"rehearsal": 35.0, "03_captioning": 3800.0}, "gpu_startup_seconds": 10}
    (tmp_path / FR.RESULTS_FILE).write_text(json.dumps(result))
    block = FR.render_block(tmp_path)
    assert "| notebook 03: captioning | 15.0 min | 3.9 GB | 63.3 min |" in block
    assert "STEPS 300 instead of 10000" in block and "goal (at most 8 GB) met" in block.replace("(the largest of the stages measured): ", "")
    assert FR.results_name(31783, "cpu") == FR.RESULTS_FILE and FR.results_name(300, "cpu").endswith("_300.json")
    assert FR.results_name(31783, "cuda") == "flickr30k_rehearsal_cuda.json"

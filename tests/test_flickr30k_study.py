"""make flickr30k's driver (stages, check) and the rehearsal measurement's README block, on small inputs."""

import json
import sys
from pathlib import Path

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
    stopped = {"05_closing_the_inversion_gap": {"status": "stopped (SIGTERM)", "seconds": 900.0}}
    assert FR.projection(stopped, {}) == {}  # a stage that did not finish is not projected


def test_readme_block_renders_from_the_results_file(tmp_path):
    assert "Not measured yet" in FR.render_block(tmp_path)
    result = {"run": {"device": {"name": "x86_64", "threads": 2}, "git_commit": "0123456789abcdef"},
              "images": 31783, "captions": 158915, "image_size": 64, "total_seconds": 3000.0,
              "stages": {"rehearsal": {"status": "done", "seconds": 200.0, "peak_rss_mb": 300},
                         "03_captioning": {"status": "done", "seconds": 900.0, "peak_rss_mb": 4000, "threads": 1,
                                           "git_commit": "fedcba9876543210"}},
              "peak_rss_mb": 4000, "goal_peak_rss_mb": 8192, "goal_met": True,
              "shortened": {"03_captioning": {"knob": "STEPS", "cpu": 300, "full": 10000, "ratio": 33.3}},
              "also_changed": ["final table: PORTABLE false instead of its default"],
              "gpu_projection_seconds": {"rehearsal": 35.0, "03_captioning": 3800.0}, "gpu_startup_seconds": 10}
    (tmp_path / FR.RESULTS_FILE).write_text(json.dumps(result))
    block = FR.render_block(tmp_path)
    assert "Also changed: final table: PORTABLE false instead of its default." in block
    assert "| notebook 03: captioning | 15.0 min | 1 | 3.9 GB | 63.3 min |" in block
    assert "| rehearsal generation | 3.3 min | 2 | 0.3 GB |" in block  # threads of the run when a stage has none
    assert "`0123456789`: rehearsal generation; `fedcba9876`: notebook 03: captioning" in block
    assert "STEPS 300 instead of 10000" in block and "goal (at most 8 GB) met" in block.replace("(the largest of the stages measured): ", "")
    assert FR.results_name(31783, "cpu") == FR.RESULTS_FILE and FR.results_name(300, "cpu").endswith("_300.json")
    assert FR.results_name(31783, "cuda") == "flickr30k_rehearsal_cuda.json"


def test_parse_stages_keeps_the_run_order_and_names_unknown_stages():
    assert F.parse_stages("03_captioning, images") == ["images", "03_captioning"]
    with pytest.raises(ValueError, match="unknown stage.*nb03"):
        F.parse_stages("images,nb03")


def test_a_forced_rerun_keeps_the_measurement_it_replaces(tmp_path):
    record = tmp_path / "flickr30k.json"
    record.write_text(json.dumps({"run": {"device": {"threads": 2}, "git_commit": "aaaa"},
                                  "stages": {"02_autoencoder": {"status": "done", "seconds": 363.8, "peak_rss_mb": 5325},
                                             "03_captioning": {"status": "failed (exit 1)", "seconds": 3.0}}}))
    earlier = FR._earlier(tmp_path / "missing.json", record, ["02_autoencoder", "03_captioning"])
    assert earlier == {"02_autoencoder": {"threads": 2, "git_commit": "aaaa", "seconds": 363.8, "peak_rss_mb": 5325}}
    (tmp_path / "results.json").write_text(json.dumps({"earlier": earlier}))
    assert FR._earlier(tmp_path / "results.json", record, []) == earlier  # carried by the results file


def test_an_earlier_measurement_on_another_rehearsal_folder_is_not_carried(tmp_path):
    rows = {"02_autoencoder": {"seconds": 363.8, "parameters": {"DATA_ROOT": "/old/data"}},
            "03_captioning": {"seconds": 75.0}}   # no parameters recorded: kept
    (tmp_path / "results.json").write_text(json.dumps({"earlier": rows}))
    missing = tmp_path / "no-record.json"
    assert FR._earlier(tmp_path / "results.json", missing, [], Path("/old/data")) == rows
    assert FR._earlier(tmp_path / "results.json", missing, [], Path("/new/data")) == {"03_captioning": rows["03_captioning"]}


def test_run_child_stops_the_stage_on_sigterm_and_still_reports(tmp_path):
    import os
    import signal
    import threading

    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    code, seconds, _ = F.run_child([sys.executable, "-c", "import time; time.sleep(30)"])
    assert code == -signal.SIGTERM and seconds < 10


def test_notebooks_may_share_one_runner_process_and_keep_their_own_times():
    assert F._groups(["images", "02_autoencoder", "03_captioning", "invcap.studies.final_table"], together=True) == [
        ["images"], ["02_autoencoder", "03_captioning"], ["invcap.studies.final_table"]]
    assert F._groups(["02_autoencoder", "03_captioning"], together=False) == [["02_autoencoder"], ["03_captioning"]]
    group = ["02_autoencoder", "03_captioning", "04_inversion_analysis"]
    before = {"02_autoencoder": {"seconds": 5.0}}
    after = {"02_autoencoder": {"seconds": 20.0}, "03_captioning": {"seconds": 30.0}}
    rows = F._group_rows(group, 1, 70.0, 900.0, before, after)  # failed in notebook 04
    assert [r["status"] for r in rows.values()] == ["done", "done", "failed (exit 1)"]
    assert [r["seconds"] for r in rows.values()] == [20.0, 30.0, 20.0]
    assert rows["03_captioning"]["shared_process"] == {"stages": group, "seconds": 70.0}
    assert F._group_rows(["images"], 0, 8.04, 512.4, {}, {}) == {"images": {"status": "done", "seconds": 8.0,
                                                                              "peak_rss_mb": 512}}


def test_stages_of_an_older_record_get_the_threads_and_commit_of_its_run(tmp_path):
    record = tmp_path / "flickr30k.json"
    record.write_text(json.dumps({"run": {"device": {"threads": 2}, "git_commit": "aaaa"},
                                  "stages": {"images": {"status": "done", "seconds": 67.4},
                                             "03_captioning": {"seconds": 9.0, "threads": 1, "git_commit": "bbbb"}}}))
    FR._backfill(record)
    stages = json.loads(record.read_text())["stages"]
    assert stages["images"] == {"status": "done", "seconds": 67.4, "threads": 2, "git_commit": "aaaa"}
    assert stages["03_captioning"] == {"seconds": 9.0, "threads": 1, "git_commit": "bbbb"}


def test_collect_turns_a_stopped_runs_record_and_log_into_the_measured_gpu_column(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_RESULTS_DIR", str(tmp_path / "results"))
    run = {"device": {"type": "cuda", "name": "NVIDIA H200", "threads": 16}, "git_commit": "abcdef0123456789",
           "git_dirty": False, "versions": {"torch": "2.11.0+cu130"}, "config": {"IMAGE_SIZE": 64}}
    record = tmp_path / "flickr30k.json"
    record.write_text(json.dumps({"run": run, "stages": {
        "images": {"status": "done", "seconds": 28.3, "peak_rss_mb": 1178, "threads": 16, "parameters": {}},
        "03_captioning": {"status": "done", "seconds": 91.6, "peak_rss_mb": 3827, "threads": 16}}}))
    log = tmp_path / "run.log"
    log.write_text("/tmp/x/data: 31783 images, 158915 captions, splits {'train': 29000} (written in 19 s)\n")
    result = FR.collect(record, log, 31783, "cuda", "params/flickr30k.yaml", note="Stopped by the lease.")
    assert result["stages"]["rehearsal"]["seconds"] == 19.0 and result["captions"] == 158915
    assert result["stages"]["05_closing_the_inversion_gap"] == {"status": "not reached"}
    assert result["total_seconds"] == round(19.0 + 28.3 + 91.6, 1) and result["peak_rss_mb"] == 3827
    assert not result["complete"] and (tmp_path / "results" / "flickr30k_rehearsal_cuda.json").is_file()
    with pytest.raises(ValueError, match="rehearsal generation line"):
        FR.collect(record, log, 300, "cuda", "params/flickr30k.yaml", note="")
    cpu = {"run": {"device": {"name": "x86_64", "threads": 1}, "git_commit": "0123456789abcdef"},
           "images": 31783, "captions": 158915, "image_size": 64, "total_seconds": 100.0,
           "stages": {"03_captioning": {"status": "done", "seconds": 42.0, "peak_rss_mb": 3000},
                      "05_closing_the_inversion_gap": {"status": "done", "seconds": 300.0, "peak_rss_mb": 3000}},
           "peak_rss_mb": 3000, "goal_peak_rss_mb": 8192, "goal_met": True, "shortened": {},
           "gpu_projection_seconds": {"03_captioning": 144.0, "05_closing_the_inversion_gap": 1188.0}}
    (tmp_path / "results" / FR.RESULTS_FILE).write_text(json.dumps(cpu))
    block = FR.render_block(tmp_path / "results")
    assert "| measured, NVIDIA H200, full lengths |" in block
    assert "| notebook 03: captioning | 42 s | 1 | 2.9 GB | 2.4 min | 92 s |" in block
    assert "| notebook 05: closing the inversion gap | 5.0 min | 1 | 2.9 GB | 19.8 min | not reached |" in block
    assert "where the projection said 2.4 min" in block
    assert "aim of 10 minutes for the whole run is not known from the stages that finished" in block
    assert block.rstrip().endswith("Stopped by the lease.")
    result["total_seconds"] = 700.0  # the finished stages alone over the aim: missed, whatever is left
    (tmp_path / "results" / "flickr30k_rehearsal_cuda.json").write_text(json.dumps(result))
    assert "aim of 10 minutes for the whole run is missed" in FR.render_block(tmp_path / "results")

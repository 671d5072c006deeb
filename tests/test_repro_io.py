import json

import pytest
import torch

from invcap.io import save_torch_atomic, write_csv_atomic, write_json_atomic
from invcap.repro import resolve_device, run_record, seed_everything


def test_same_seed_same_numbers():
    seed_everything(7)
    a = torch.randn(5)
    seed_everything(7)
    assert torch.equal(a, torch.randn(5))
    assert torch.get_num_threads() == 2 or torch.get_num_threads() >= 1


def test_bad_seed_and_device():
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            resolve_device("cuda")
    assert resolve_device("auto").type in {"cpu", "cuda"}


def test_run_record_fields():
    record = run_record({"lr": 1e-3}, seed=3, device="cpu")
    assert set(record) >= {"config", "seed", "versions", "device", "git_commit"}
    assert record["versions"]["torch"] == torch.__version__


def test_atomic_writers_leave_no_temporaries(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": torch.tensor(1.5), "y": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1.5, "y": [1, 2]}
    write_csv_atomic(tmp_path / "b.csv", [{"a": 1, "b": 2}], ["a", "b"])
    assert (tmp_path / "b.csv").read_text().splitlines() == ["a,b", "1,2"]
    save_torch_atomic({"w": torch.ones(2)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.csv", "c.pt"]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "p.json", {"a": 1})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_results_json_is_strict(tmp_path):
    import json
    import math

    from invcap.io import write_json_atomic

    path = write_json_atomic(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2.5}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": 2.5}}
    assert not any(isinstance(v, float) and math.isnan(v) for v in json.loads(text).values())


def test_run_record_names_commit_dirtiness_data_and_timings():
    from invcap.repro import Stopwatch, run_record

    watch = Stopwatch()
    with watch("train"):
        pass
    record = run_record({"x": 1}, seed=0, device="cpu", data="embedded:abc", timings=watch.seconds)
    assert isinstance(record["git_dirty"], (bool, type(None))) and record["git_commit"]
    assert record["data"] == "embedded:abc" and set(record["timings"]) == {"train"}
    assert record["device"]["type"] == "cpu" and record["device"]["threads"] >= 1


def test_git_dirty_ignores_the_artifacts_make_paper_writes(tmp_path, monkeypatch):
    import subprocess

    from invcap import repro

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for name in ("src/code.py", "results/a.json", "figures/a.png", "notebooks/01.ipynb", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr("invcap.io.repo_root", lambda: tmp_path)
    for name in ("results/a.json", "figures/a.png", "notebooks/01.ipynb", "README.md"):
        (tmp_path / name).write_text("1")
    assert repro.git_state()["dirty"] is False
    (tmp_path / "src/code.py").write_text("1")
    assert repro.git_state()["dirty"] is True

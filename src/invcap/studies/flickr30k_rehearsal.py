"""The full-size rehearsal: 31,783 Flickr30k-shaped photos through ``make flickr30k``, timed and measured.

    python -m invcap.studies.flickr30k_rehearsal measure [--images 31783] [--params params/flickr30k-cpu.yaml]
        [--work /tmp/flickr30k-rehearsal] [--workers 2] [--device cpu]

1. writes the rehearsal set (``invcap.data.rehearsal``) under ``WORK/data`` (reused when complete);
2. runs every stage of ``make flickr30k`` on it (``invcap.studies.flickr30k.run_stages``: image decode,
   caption encoding, notebooks 02-05, the post-notebook studies) into ``WORK/out`` with caches in
   ``WORK/out/cache``, each stage in its own process, its wall time and peak resident memory (its
   children included) read from the kernel's accounting;
3. writes ``results/flickr30k_rehearsal.json``: every stage's seconds and peak memory, the goal (peak
   <= 8 GB), how much training was shortened for the CPU (the parameters file against
   ``params/flickr30k.yaml``), and a projection for one GPU whose assumptions are written beside it.

``README_BLOCKS["flickr30k-rehearsal"]`` renders the README's table from that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["measure", "collect", "results_name", "render_block", "projection", "README_BLOCKS", "KEY_NUMBERS", "RESULTS_FILE",
           "GOAL_PEAK_MB", "FINAL_TABLE_KNOBS"]

RESULTS_FILE = "flickr30k_rehearsal.json"
GOAL_PEAK_MB = 8 * 1024
FULL_PARAMS = "params/flickr30k.yaml"
LABELS = {"final_table": "final table", "rehearsal": "rehearsal generation", "images": "image decode into the uint8 cache",
          "captions": "caption encoding (embedding cache)", "02_autoencoder": "notebook 02: autoencoder",
          "03_captioning": "notebook 03: captioning", "04_inversion_analysis": "notebook 04: inversion analysis",
          "05_closing_the_inversion_gap": "notebook 05: closing the inversion gap",
          "invcap.studies.final_table": "post-notebook studies (final table)"}
# Which parameter sets each stage's length, to scale CPU seconds to the full-length run.
LENGTH_KNOBS = {"02_autoencoder": "EPOCHS", "03_captioning": "STEPS", "05_closing_the_inversion_gap": "STEPS"}
# Assumed speed-up of one H200 GPU (with the 16 cores beside it) over this 2-core CPU, per stage. These
# are assumptions, not measurements: no GPU was lent when this was written (scripts/gpu_rehearsal.sh
# measures them when one is).
GPU_ASSUMPTIONS = {
    "rehearsal": (8.0, "CPU-bound drawing and JPEG encoding, parallel: 16 cores instead of 2"),
    "images": (6.0, "CPU-bound JPEG decoding by 8 workers instead of 2 (image_workers caps at 8)"),
    "captions": (20.0, "MiniLM-L6 on a GPU encodes ~20x faster than on 2 CPU threads"),
    "02_autoencoder": (30.0, "a small conv autoencoder at 64 px, batch 64: ~30x on a GPU"),
    "03_captioning": (8.0, "384-wide LU network, batch 256: launch-bound on a GPU, ~8x"),
    "04_inversion_analysis": (3.0, "float64 Jacobians/SVDs and sweeps on 1,000 test images, much CPU-side work"),
    "05_closing_the_inversion_gap": (8.0, "the same LU networks as notebook 03, several methods"),
    "invcap.studies.final_table": (8.0, "the same LU networks, several methods and seeds"),
}
# The final table's knobs that set how much it trains (their defaults: final_table.Config's).
FINAL_TABLE_KNOBS = ("SEEDS", "STEP_GRID", "INVERSE_WEIGHTS")
GPU_AIM_SECONDS = 600.0  # scripts/gpu_rehearsal.sh: the whole full-size run within 10 minutes on one H200
STARTUP_SECONDS = 10.0  # a process start (Python, torch, a Jupyter kernel): not faster on a GPU


def _lengths(params_file: Path) -> dict[str, dict[str, Any]]:
    """stage -> {knob, cpu, full, ratio} for the stages whose length a parameter sets."""
    from invcap.io import repo_root
    from invcap.studies.notebooks import params_for, read_params

    short, full = read_params(params_file), read_params(repo_root() / FULL_PARAMS)
    out = {}
    for stage, knob in LENGTH_KNOBS.items():
        a, b = params_for(stage, short).get(knob), params_for(stage, full).get(knob)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0:
            out[stage] = {"knob": knob, "cpu": a, "full": b, "ratio": b / a}
    # the final table trains its validation grid (every inverse weight x every length, one seed), then
    # every row once per seed at the chosen length (at most the grid's longest)
    from invcap.studies.final_table import Config

    defaults = Config()

    def work(p: Mapping[str, Any]) -> int:
        grid = p.get("STEP_GRID", defaults.step_grid)
        return (len(p.get("INVERSE_WEIGHTS", defaults.inverse_weights)) * sum(grid)
                + len(p.get("SEEDS", defaults.seeds)) * max(grid))

    a, b = work(params_for("final_table", short)), work(params_for("final_table", full))
    if a > 0 and a != b:
        out["invcap.studies.final_table"] = {"knob": "weights x sum(STEP_GRID) + seeds x max(STEP_GRID)", "cpu": a,
                                             "full": b, "ratio": b / a}
    return out


def other_changes(params_file: Path) -> list[str]:
    """What else the CPU parameters file changes against ``params/flickr30k.yaml`` besides the
    training lengths (``LENGTH_KNOBS``, the final table's seeds and step grid), e.g. fewer noise levels."""
    from invcap.io import repo_root
    from invcap.studies.notebooks import read_params

    short, full = read_params(params_file), read_params(repo_root() / FULL_PARAMS)
    lengths = {(s, k) for s, k in LENGTH_KNOBS.items()} | {("final_table", k) for k in FINAL_TABLE_KNOBS}
    out = []
    for section, values in short.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            base = (full.get(section) or {}).get(key, "its default")
            if (section, key) not in lengths and value != base:
                out.append(f"{LABELS.get(section, section)}: {key} {json.dumps(value)} instead of "
                           f"{base if base == 'its default' else json.dumps(base)}")
    return out


def projection(stages: Mapping[str, Mapping[str, Any]], lengths: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Projected seconds per stage on one GPU at the full training lengths: a process start, plus
    the measured CPU remainder scaled by (full length / CPU length) and divided by the assumed speed-up."""
    out = {}
    for stage, row in stages.items():
        if "seconds" not in row or stage not in GPU_ASSUMPTIONS or row.get("status", "done") != "done":
            continue  # a failed or stopped stage's time says nothing about its full length
        speedup = GPU_ASSUMPTIONS[stage][0]
        ratio = lengths.get(stage, {}).get("ratio", 1.0)
        work = max(0.0, row["seconds"] - STARTUP_SECONDS)
        out[stage] = round(STARTUP_SECONDS + work * ratio / speedup, 1)
    return out


def results_name(images: int, device: str) -> str:
    """``flickr30k_rehearsal.json`` for the full-size CPU run the README shows, ``..._cuda.json`` for a
    GPU run, ``..._<images>.json`` for a smaller one (a trial never overwrites the measurement)."""
    if str(device).startswith("cuda"):
        return "flickr30k_rehearsal_cuda.json" if images == 31783 else f"flickr30k_rehearsal_cuda_{images}.json"
    return RESULTS_FILE if images == 31783 else f"flickr30k_rehearsal_{images}.json"


def measure(images: int, params_file: str | Path, work: str | Path, workers: int = 2,
            device: str = "cpu", force: bool = False, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Steps 1-3 of the module docstring; returns what it wrote to ``results/flickr30k_rehearsal.json``."""
    import os

    from invcap.io import results_dir, write_json_atomic
    from invcap.repro import run_record
    from invcap.studies.flickr30k import RECORD, STAGES, run_child, run_stages

    params_file, work = Path(params_file).resolve(), Path(work).resolve()
    data, out = work / "data", work / "out"
    stages: dict[str, dict[str, Any]] = {}
    existed = (data / "rehearsal.json").is_file()
    code, seconds, peak = run_child([sys.executable, "-m", "invcap.data.rehearsal", str(data), "--images",
                                     str(images), "--workers", str(workers)], env={"INVCAP_PROGRESS": "final"})
    if code != 0:
        raise RuntimeError(f"rehearsal generation failed (exit {code})")
    manifest = json.loads((data / "rehearsal.json").read_text())
    previous = _read(results_dir() / results_name(images, device))
    if existed:  # generated by an earlier measurement: its own recorded time and memory, and that run's commit
        before = previous.get("stages", {}).get("rehearsal", {})
        stages["rehearsal"] = {"status": "done", "seconds": manifest["seconds"]["total"],
                               "peak_rss_mb": manifest.get("peak_rss_mb"), "reused_from_earlier_run": True,
                               "threads": manifest.get("workers"),
                               "git_commit": before.get("git_commit", previous.get("run", {}).get("git_commit"))}
    else:
        stages["rehearsal"] = {"status": "done", "seconds": round(seconds, 1), "peak_rss_mb": round(peak),
                               "threads": workers}
    os.environ.setdefault("INVCAP_CACHE_DIR", str(out / "cache"))
    _backfill(out / "results" / RECORD)
    earlier = _earlier(results_dir() / results_name(images, device), out / "results" / RECORD,
                       only or STAGES if force else (), data)
    failure = None
    try:
        record = run_stages(params_file, [f"DATA_ROOT={data}", f"DEVICE={device}"], out, force=force,
                            stages=only or STAGES)
    except RuntimeError as error:  # a failed or stopped stage: record what finished, and how far it got
        failure, record = error, json.loads((out / "results" / RECORD).read_text())
    stages.update({k: {kk: v[kk] for kk in ("status", "seconds", "peak_rss_mb", "threads", "git_commit") if kk in v}
                   for k, v in record["stages"].items()})
    lengths = _lengths(params_file)
    result = {
        "run": run_record({"images": images, "params_file": str(params_file.name), "workers": workers},
                          0, device, data=record["run"]["data"], timings={k: v["seconds"] for k, v in stages.items()
                                                                         if v.get("seconds") is not None}),
        "images": images, "captions": manifest["counts"]["captions"], "rehearsal": manifest["counts"],
        "stages": stages, **_totals(stages),
        "shortened": lengths, "also_changed": other_changes(params_file), "image_size": record["run"]["config"].get("IMAGE_SIZE"),
        "gpu_projection_seconds": projection(stages, lengths),
        "gpu_assumptions": {k: {"speedup": v[0], "why": v[1]} for k, v in GPU_ASSUMPTIONS.items()},
        "gpu_startup_seconds": STARTUP_SECONDS, "gpu_measured": None, "earlier": earlier,
    }
    write_json_atomic(results_dir() / results_name(images, device), result)
    if failure is not None:
        raise failure
    return result


def _totals(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Total seconds and peak memory over the stages that have a time, and the memory goal's verdict."""
    timed = [row for row in stages.values() if row.get("seconds") is not None]
    peaks = [row["peak_rss_mb"] for row in timed if row.get("peak_rss_mb")]
    return {"total_seconds": round(sum(row["seconds"] for row in timed), 1),
            "peak_rss_mb": max(peaks) if peaks else None, "goal_peak_rss_mb": GOAL_PEAK_MB,
            "goal_met": bool(peaks) and max(peaks) <= GOAL_PEAK_MB}


def collect(record: str | Path, log: str | Path, images: int, device: str, params_file: str | Path,
            note: str) -> dict[str, Any]:
    """The results file of a run that was stopped before ``measure`` could write it (a device lease
    that ran out): every finished stage from the driver record ``WORK/out/results/flickr30k.json``, the
    generation time and counts from the run's log, and every stage not reached marked so. ``note``
    says why it stopped and what differed from a plain run; it is printed under the README table."""
    import re

    from invcap.io import results_dir, write_json_atomic
    from invcap.studies.flickr30k import STAGES

    driver = json.loads(Path(record).read_text())
    text = Path(log).read_text()
    counts = re.search(r": (\d+) images, (\d+) captions, splits .* \((?:written in|reused)(?: (\d+) s)?", text)
    if counts is None or int(counts.group(1)) != images:
        raise ValueError(f"{log} does not hold the rehearsal generation line for {images} images")
    stages: dict[str, dict[str, Any]] = {}
    if counts.group(3) is not None:
        stages["rehearsal"] = {"status": "done", "seconds": float(counts.group(3)), "peak_rss_mb": None,
                               "threads": driver["run"]["device"].get("threads"),
                               "git_commit": driver["run"].get("git_commit")}
    for stage in STAGES:
        row = driver.get("stages", {}).get(stage)
        stages[stage] = ({k: row[k] for k in ("status", "seconds", "peak_rss_mb", "threads", "git_commit") if k in row}
                         if row else {"status": "not reached"})
    result = {"run": driver["run"], "images": images, "captions": int(counts.group(2)), "stages": stages,
              **_totals(stages), "shortened": _lengths(Path(params_file)),
              "image_size": driver["run"]["config"].get("IMAGE_SIZE"), "params_file": str(params_file),
              "gpu_measured": device.startswith("cuda"), "complete": all(r.get("status") == "done" for r in stages.values()),
              "note": note, "collected_from": {"record": Path(record).name, "log": Path(log).name}}
    write_json_atomic(results_dir() / results_name(images, device), result)
    return result


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _backfill(record: Path) -> None:
    """Stages recorded before each carried its own thread count and commit get those of the run that
    recorded them (the driver record's run), before a resumed call rewrites that run record."""
    from invcap.io import write_json_atomic

    driver = _read(record)
    run = driver.get("run", {})
    missing = [row for row in driver.get("stages", {}).values() if "seconds" in row and "git_commit" not in row]
    if not missing:
        return
    for row in missing:
        row.setdefault("threads", run.get("device", {}).get("threads"))
        row["git_commit"] = run.get("git_commit")
    write_json_atomic(record, driver)


def _earlier(results: Path, record: Path, rerun: Sequence[str], data: Path | None = None) -> dict[str, Any]:
    """Measurements that a forced rerun replaces (e.g. notebook 02's training, when a later rerun of
    notebook 02 loads the checkpoint it trained), kept beside the new ones: those carried by the
    results file, plus the driver's finished entries of the stages in ``rerun``. A carried entry
    recorded on another rehearsal folder than ``data`` is dropped: a measurement on a new folder
    runs every stage from empty caches, so it replaces nothing of that run."""
    try:
        earlier = dict(json.loads(results.read_text()).get("earlier") or {})
    except (FileNotFoundError, json.JSONDecodeError):
        earlier = {}
    if data is not None:
        earlier = {stage: row for stage, row in earlier.items()
                   if (row.get("parameters") or {}).get("DATA_ROOT", str(data)) == str(data)}
    try:
        driver = json.loads(record.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        driver = {}
    run = driver.get("run", {})  # stages recorded before they carried their own threads and commit
    for stage in rerun:
        row = driver.get("stages", {}).get(stage, {})
        if row.get("status") == "done":
            earlier[stage] = {"threads": run.get("device", {}).get("threads"), "git_commit": run.get("git_commit"),
                              **{k: row[k] for k in ("seconds", "peak_rss_mb", "threads", "git_commit", "parameters")
                                 if k in row}}
    return earlier


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render_block(results: Path) -> str:
    """The README table: stage, CPU wall time, peak memory, projected GPU time at full lengths."""
    path = Path(results) / RESULTS_FILE
    if not path.is_file():
        return "_Not measured yet: `python -m invcap.studies.flickr30k_rehearsal measure` writes results/flickr30k_rehearsal.json._"
    r = json.loads(path.read_text())
    proj = r.get("gpu_projection_seconds", {})
    gpu = _read(Path(results) / results_name(r["images"], "cuda"))
    gpu_stages = gpu.get("stages", {})

    def measured(stage: str) -> str:
        row = gpu_stages.get(stage)
        if row is None:
            return "-"
        return _fmt_s(row["seconds"]) if row.get("status") == "done" and row.get("seconds") is not None \
            else str(row.get("status", "-"))

    gpu_name = gpu.get("run", {}).get("device", {}).get("name", "one GPU")
    lines = [f"Measured on {r['run']['device'].get('name', 'cpu')}, {r['images']:,} images / {r['captions']:,} "
             f"captions at {r.get('image_size')} px (threads per stage in the table), results written at "
             f"commit `{r['run']['git_commit'][:10]}`:", "",
             "| stage | CPU wall time | threads | peak memory | projected, one GPU, full lengths |"
             + (f" measured, {gpu_name}, full lengths |" if gpu else ""),
             "|---|---|---|---|---|" + ("---|" if gpu else "")]
    threads = r["run"]["device"].get("threads")
    for stage, row in r["stages"].items():
        peak = f"{row['peak_rss_mb'] / 1024:.1f} GB" if row.get("peak_rss_mb") else "-"
        status = ("" if row.get("status") in ("done", None) else
                  " (**stopped unfinished** at the deadline)" if str(row["status"]).startswith("stopped")
                  else f" ({row['status']})")
        lines.append(f"| {LABELS.get(stage, stage)}{status} | {_fmt_s(row.get('seconds'))} | "
                     f"{row.get('threads', threads)} | {peak} | {_fmt_s(proj.get(stage))} |"
                     + (f" {measured(stage)} |" if gpu else ""))
    total_proj = sum(proj.values())
    peak = r.get("peak_rss_mb")
    gpu_total = (f" **{_fmt_s(gpu['total_seconds'])}**{'' if gpu.get('complete') else ' (stages finished)'} |"
                 if gpu else "")
    lines.append(f"| **total** | **{_fmt_s(r['total_seconds'])}** | | **{peak / 1024:.1f} GB** | **{_fmt_s(total_proj)}** |{gpu_total}"
                 if peak else f"| **total** | **{_fmt_s(r['total_seconds'])}** | | - | **{_fmt_s(total_proj)}** |{gpu_total}")
    commits = {}
    for stage, row in r["stages"].items():
        commits.setdefault(str(row.get("git_commit", r["run"]["git_commit"]))[:10], []).append(LABELS.get(stage, stage))
    if len(commits) > 1:  # a resumed measurement: say which code timed which stage
        lines += ["", "Stages by commit: " + "; ".join(f"`{c}`: {', '.join(names)}" for c, names in commits.items())
                  + "."]
    short = "; ".join(f"{LABELS.get(s, s)}: {v['knob']} {v['cpu']:g} instead of {v['full']:g}"
                      for s, v in r.get("shortened", {}).items())
    verdict = (f"Peak memory {peak / 1024:.1f} GB (the largest of the stages measured): goal (at most {r['goal_peak_rss_mb'] / 1024:.0f} GB) "
               f"{'met' if r['goal_met'] else 'missed by ' + format((peak - r['goal_peak_rss_mb']) / 1024, '.1f') + ' GB'}."
               if peak else "Peak memory not measured.")
    from invcap.studies.flickr30k import STAGES

    for stage, row in (r.get("earlier") or {}).items():  # replaced by a forced rerun: still reported
        lines += ["", f"Earlier measurement of {LABELS.get(stage, stage)}, replaced by a rerun that reused its caches "
                  f"and checkpoints: {_fmt_s(row.get('seconds'))}, {row.get('threads', threads)} threads, peak "
                  + (f"{row['peak_rss_mb'] / 1024:.1f} GB" if row.get("peak_rss_mb") else "not measured")
                  + f", commit `{str(row.get('git_commit', r['run']['git_commit']))[:10]}`."]
    missing = [LABELS.get(st, st) for st in STAGES if st not in r["stages"]]
    also = "; ".join(r.get("also_changed") or [])
    lines += ["", f"Training shortened for the CPU: {short or 'nothing'}." + (f" Also changed: {also}." if also else "")
              + f" {verdict}"
              + (f" **Not measured yet at full size:** {', '.join(missing)}." if missing else ""),
              "The projected column is not a measurement: a process start "
              f"({r.get('gpu_startup_seconds', STARTUP_SECONDS):.0f} s) plus the CPU time scaled to the full lengths "
              "and divided by an assumed speed-up per stage (listed in the results file)."]
    if gpu:
        run = gpu["run"]
        same = [s for s, row in gpu_stages.items() if row.get("status") == "done" and s in proj]
        lines += ["", f"The measured column is `scripts/gpu_rehearsal.sh` on one {gpu_name} with "
                  f"{run['device'].get('threads')} CPU threads, torch {run['versions'].get('torch')}, the full "
                  f"training lengths of `{gpu.get('params_file', FULL_PARAMS)}`, commit `{run['git_commit'][:10]}`"
                  f"{' (dirty tree)' if run.get('git_dirty') else ''} (`results/{results_name(gpu['images'], 'cuda')}`). "
                  f"Over the stages it finished it took {_fmt_s(gpu['total_seconds'])} where the projection said "
                  f"{_fmt_s(sum(proj[s] for s in same))}"
                  + _aim_text(gpu) + ". " + gpu.get("note", "")]
    return "\n".join(lines)


def _aim_text(gpu: Mapping[str, Any]) -> str:
    """The GPU run against ``GPU_AIM_SECONDS``: met or missed when every stage finished; with stages
    still to run, missed only once the finished ones alone take longer, else not known yet."""
    aim, total = f"{GPU_AIM_SECONDS / 60:.0f} minutes", gpu["total_seconds"]
    todo = [LABELS.get(s, s) for s, row in gpu["stages"].items() if row.get("status") != "done"]
    if not todo:
        return f"; the aim of {aim} for the whole run is {'met' if total <= GPU_AIM_SECONDS else 'missed'}"
    verdict = "missed" if total > GPU_AIM_SECONDS else "not known from the stages that finished"
    return f"; the aim of {aim} for the whole run is {verdict}, with {', '.join(todo)} still to run"


README_BLOCKS = {"flickr30k-rehearsal": render_block}
KEY_NUMBERS: dict = {}  # a timing study: nothing here should agree across numeric paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("measure", help="generate, run every stage, write results/flickr30k_rehearsal.json")
    m.add_argument("--images", type=int, default=31783)
    m.add_argument("--params", default="params/flickr30k-cpu.yaml")
    m.add_argument("--work", default="/tmp/flickr30k-rehearsal")
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--device", default="cpu")
    m.add_argument("--force", action="store_true", help="rerun stages that finished before")
    m.add_argument("--stages", default=None, help="comma-separated subset of the stages (default: all); a later "
                   "call without it runs the rest, skipping those that finished")
    commands.add_parser("render", help="print the README block from results/")
    c = commands.add_parser("collect", help="write the results file of a stopped run from its driver record and log")
    c.add_argument("--record", required=True, help="WORK/out/results/flickr30k.json of the stopped run")
    c.add_argument("--log", required=True, help="the run's output (holds the rehearsal generation line)")
    c.add_argument("--images", type=int, default=31783)
    c.add_argument("--device", default="cuda")
    c.add_argument("--params", default=FULL_PARAMS)
    c.add_argument("--note", required=True, help="why it stopped, and what differed from a plain run")
    args = parser.parse_args(argv)
    if args.command == "render":
        from invcap.io import results_dir

        print(render_block(results_dir()))
        return 0
    try:
        if args.command == "collect":
            result = collect(args.record, args.log, args.images, args.device, args.params, args.note)
        else:
            result = measure(args.images, args.params, args.work, args.workers, args.device, args.force,
                             args.stages.split(",") if args.stages else None)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote results/{results_name(args.images, args.device)}: total {_fmt_s(result['total_seconds'])} over the "
          f"stages that ran, peak {result['peak_rss_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The final table (``make paper``, after the notebooks): ``python -m invcap.studies.final_table``.

Everything chosen before the test splits are read, on validation splits only:
- the method: notebook 05's selection (``results/closing_the_gap.json``);
- its training length and the weight of its inverse term: each (``Config.inverse_weights`` x
  ``Config.step_grid``) pair is trained (seed 0) and scored on the validation splits; among the pairs
  that caption at least as well through f on ``val`` as notebook 05's ``paper`` row, the fewest steps
  within ``step_tolerance`` points of the best unseen all-correct rate win (less compute for a
  difference inside the noise; ties: the higher seen rate);
- the two-networks baseline's MLP: hidden layers x learning rate, by the same rule's unseen rate
  for the generator, by validation R@1 for the captioner.
Then every method of the registry and every baseline is trained with ``Config.seeds`` at the
chosen length (the ``paper`` row with notebook 03's configuration, its own seed loaded from its
checkpoint), the chosen method also on the second numeric path (``PORTABLE_ENV``), and
``score_test`` reads the test splits ONCE: both wordings, partial captions, the decoder ceiling,
95 % intervals that resample attribute combinations and training seeds. Trainings run in worker
processes (``Config.workers``, one thread each); their networks land in the caches, which this
process then loads. Results: ``results/final_table.json``; figures ``05_final_table.png``,
``05_typed_captions.png``, ``05_training_stability.png``; the generator bundle for
``python -m invcap generate``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from invcap import baselines as bl
from invcap import evaluation as ev
from invcap.io import read_json, results_dir, write_json_atomic
from invcap.methods import Contrastive, Inverse, divergence, method, parameter_count
from invcap.repro import Stopwatch, run_record, seed_everything
from invcap.studies import nb05_closing_the_inversion_gap as nb05
from invcap.studies.training_jobs import default_workers, errors as failed_jobs, job_key, run_jobs, train_one

__all__ = ["Config", "choose_steps", "tune_mlp", "final_jobs", "run_jobs", "load_models",
           "score_test", "goals", "run", "README_BLOCKS", "KEY_NUMBERS", "RESULTS"]

RESULTS = "final_table.json"
TEST_SPLITS = {"embedded": ("test", "compositional_test"), "flickr30k": ("test",)}
WORDINGS = ("training", "heldout")


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    step_grid: tuple[int, ...] = (600, 1200, 2400)
    inverse_weights: tuple[float, ...] = (1.0, 3.0, 10.0)   # the chosen method's Inverse term weight
    step_tolerance: float = 1.0
    mlp_layers: tuple[int, ...] = (1, 2)
    mlp_lrs: tuple[float, ...] = (1e-3, 3e-3)
    # beside the method notebook 05 chose (always a row): the paper's training (notebook 03) and its
    # InfoNCE control; any of invcap.methods.METHODS may be added at ~0.1-0.3 s per step and seed.
    methods: tuple[str, ...] = ("paper", "paper+contrastive")
    captions_per_image: int = 1    # per test image, wording and split (intervals resample combinations)
    samples: int = 4
    candidates: int = 100
    workers: int = field(default_factory=default_workers)
    portable: bool = True


# --- choices on validation -------------------------------------------------------------------

@dataclass
class Setup:
    params: Any                     # notebook 05's Params (data, lr, device, ...)
    chosen: str                     # the method notebook 05 chose on validation
    val: Any                        # notebook 05's validation Inputs
    data: dict[str, Any] = field(default_factory=dict)
    paper: Any = None               # notebook 03's model and its record, or None
    paper_val_r1: float | None = None   # notebook 05's paper row: val R@1 through f (the captioning bar)


def load_setup() -> Setup:
    results = nb05.load_results()
    params = nb05.Params(**results["params"])
    seed_everything(params.seed)
    bar = results["rows"].get("paper", {}).get("val/i2t_R@1", {}).get("value")
    return Setup(params, results["selection"]["method"], nb05.load_inputs(params),
                 params.features_args(), nb05.paper_model(params.device), bar)


def _unseen_key(setup: Setup) -> tuple[str, str]:
    if setup.val.judge is None:
        return "val/own/r_precision", "val/inv_t2i_R@1"
    return f"{nb05.UNSEEN}/training/all_correct", f"{nb05.SEEN}/training/all_correct"


def _val_generation(model, setup: Setup) -> dict[str, float]:
    """Generation on the validation captions (no partial captions): metric -> value."""
    inputs, out = setup.val, {}
    for name, split in inputs.splits.items():
        wording = "training" if "training" in inputs.captions[name] else "own"
        scores = ev.generation(model, inputs.captions[name][wording], split, inputs.decode, inputs.read, inputs.judge,
                               setup.params.candidates, setup.params.seed, pixel_scores=False)
        out.update({f"{name}/{wording}/{k}": v.mean for k, v in scores.items()})
    return out


def _method_job(name: str, setup: Setup, steps: int, seed: int, portable: bool = False,
                weights: Mapping[str, float] | None = None) -> dict[str, Any]:
    job = {"kind": "method", "name": name, "portable": portable,
           "overrides": {"steps": steps, "lr": setup.params.lr, "seed": seed, "device": setup.params.device}}
    return {**job, "weights": dict(weights)} if weights else job


def _weights(setup: Setup, inverse_weight: float) -> dict[str, float] | None:
    """The chosen method's term weights with its Inverse term at ``inverse_weight`` (None: it has none)."""
    return {"Inverse": float(inverse_weight)} if method(setup.chosen).term(Inverse) is not None else None


def choose_steps(config: Config, setup: Setup) -> dict[str, Any]:
    """Train the chosen method (seed 0) at every (inverse weight, length) of ``config.inverse_weights``
    x ``config.step_grid`` and score each on validation. Among the pairs whose val R@1 through f is
    at least notebook 05's ``paper`` row's (all pairs when none is), the fewest steps within
    ``config.step_tolerance`` points of the best unseen rate; ties: the higher seen rate."""
    weights = config.inverse_weights if method(setup.chosen).term(Inverse) is not None else (None,)
    grid = [(w, steps) for w in weights for steps in config.step_grid]
    jobs = [_method_job(setup.chosen, setup, steps, 0, weights=None if w is None else _weights(setup, w))
            for w, steps in grid]
    errors = failed_jobs(run_jobs(jobs, setup.data, config.workers, train=setup.val.train))
    unseen, seen = _unseen_key(setup)
    bar = setup.paper_val_r1
    val = []
    for (w, steps), job in zip(grid, jobs):
        entry = {"inverse_weight": w, "steps": steps, "unseen": math.nan, "seen": math.nan, "r1": math.nan}
        if job_key(job) not in errors:
            model = train_one(job, setup.val.train)
            rates = _val_generation(model, setup)
            entry.update(unseen=rates[unseen], seen=rates.get(seen, math.nan),
                         r1=ev.captioning(model, setup.val.splits["val"])["i2t_R@1"].mean)
        val.append(entry)
    finite = [e for e in val if math.isfinite(e["unseen"])]
    if not finite:
        raise ValueError(f"{setup.chosen} diverged at every point of {grid}: {errors}")
    eligible = [e for e in finite if bar is None or e["r1"] >= bar] or finite
    best = max(e["unseen"] for e in eligible)
    close = [e for e in eligible if e["unseen"] >= best - config.step_tolerance]
    pick = min(close, key=lambda e: (e["steps"], -e["seen"]))
    return {"steps": pick["steps"], "inverse_weight": pick["inverse_weight"], "val": val, "metric": unseen,
            "val_unseen": {str(e["steps"]): e["unseen"] for e in val if e["inverse_weight"] == pick["inverse_weight"]},
            "rule": (f"among the (inverse weight, steps) pairs with val R@1 through f >= the paper row's "
                     f"({bar:.1f})" if bar is not None else "among all (inverse weight, steps) pairs")
                    + f", the fewest steps within {config.step_tolerance} points of the best {unseen}; ties: {seen}"}


def tune_mlp(config: Config, setup: Setup, steps: int, params_count: int) -> dict[str, Any]:
    """The two-networks baseline's MLPs, tuned on validation: the generator (hidden layers x lr)
    by the unseen rate (ties: the seen rate), the captioner (same grid) by validation R@1."""
    contrastive = method(setup.chosen).term(Contrastive)
    grid = [(layers, lr) for layers in config.mlp_layers for lr in config.mlp_lrs]
    base = dict(params=params_count, steps=steps, seed=0)
    gens = {g: {"kind": "mlp-generator", "config": {**base, "hidden_layers": g[0], "lr": g[1]}} for g in grid}
    caps = {g: {"kind": "mlp-captioner", "config": {**base, "hidden_layers": g[0], "lr": g[1],
                                                     "contrastive_weight": contrastive.weight if contrastive else 0.0,
                                                     "temperature": contrastive.temperature if contrastive else 0.05}}
            for g in grid}
    run_jobs(list(gens.values()) + list(caps.values()), setup.data, config.workers, train=setup.val.train)
    unseen, seen = _unseen_key(setup)
    train = setup.val.train
    scores, r1 = {}, {}
    for g in grid:
        generator, captioner = train_one(gens[g], train), train_one(caps[g], train)
        rates = _val_generation(bl.TwoNetworks(generator, captioner), setup)
        scores[g] = (rates[unseen], rates.get(seen, math.nan))
        r1[g] = ev.captioning(bl.TwoNetworks(generator, captioner), setup.val.splits["val"])["i2t_R@1"].mean
    best_gen, best_cap = max(grid, key=lambda g: scores[g]), max(grid, key=lambda g: r1[g])
    return {"generator": gens[best_gen]["config"], "captioner": caps[best_cap]["config"],
            "val": [{"hidden_layers": g[0], "lr": g[1], "unseen": scores[g][0], "seen": scores[g][1], "r1": r1[g]}
                    for g in grid], "rule": f"generator: highest {unseen} (ties: {seen}); captioner: highest val R@1"}


# --- the final runs ----------------------------------------------------------------------------

def final_jobs(config: Config, setup: Setup, steps: int, mlp: Mapping[str, Any],
               chosen_weights: Mapping[str, float] | None = None) -> dict[str, list[dict]]:
    """row name -> one training job per seed (the chosen method with ``chosen_weights``)."""
    rows: dict[str, list[dict]] = {}
    for name in dict.fromkeys([setup.chosen, *config.methods]):
        if name == "paper" and setup.paper is not None:
            model, record = setup.paper
            fixed = {k: v for k, v in record["config"].items() if k not in ("device", "seed")}
            own = record["config"]["seed"]
            others = [s for s in config.seeds if s != own][:len(config.seeds) - 1]
            rows["paper (notebook 03)"] = [{"kind": "notebook03"}] + [
                {"kind": "method", "name": "paper", "overrides": {**fixed, "seed": s, "device": setup.params.device}}
                for s in others]
            continue
        weights = chosen_weights if name == setup.chosen else None
        rows[name] = [_method_job(name, setup, steps, seed, weights=weights) for seed in config.seeds]
    if config.portable:
        rows[f"{setup.chosen} (portable path)"] = [_method_job(setup.chosen, setup, steps, s, True, chosen_weights)
                                                   for s in config.seeds]
    rows["two networks"] = [{"kind": "two networks", "generator": {**mlp["generator"], "seed": s},
                             "captioner": {**mlp["captioner"], "seed": s}} for s in config.seeds]
    rows["least squares"] = [{"kind": "least squares"}]
    rows["nearest neighbour"] = [{"kind": "nearest neighbour"}]
    return rows


def _trainable(job: Mapping[str, Any]) -> list[dict]:
    if job["kind"] == "method":
        return [dict(job)]
    if job["kind"] == "two networks":
        return [{"kind": "mlp-generator", "config": job["generator"]}, {"kind": "mlp-captioner", "config": job["captioner"]}]
    return []


def load_models(rows: Mapping[str, list[dict]], setup: Setup, errors: Mapping[str, str]) -> dict[str, list[dict]]:
    """row -> per seed {"model" or "error", "divergence"} (every network from the caches)."""
    train = setup.val.train
    out: dict[str, list[dict]] = {}
    for name, jobs in rows.items():
        out[name] = []
        for job in jobs:
            failed = [errors[job_key(j)] for j in _trainable(job) if job_key(j) in errors]
            entry: dict[str, Any] = {"job": job}
            try:
                if failed:
                    raise ValueError(failed[0])
                if job["kind"] == "notebook03":
                    entry["model"] = setup.paper[0]
                elif job["kind"] == "method":
                    entry["model"] = train_one(job, train)
                elif job["kind"] == "two networks":
                    generator, captioner = (train_one(j, train) for j in _trainable(job))
                    entry["model"] = bl.TwoNetworks(generator, captioner)
                elif job["kind"] == "least squares":
                    entry["model"] = bl.LeastSquaresModel.fit(train.latents, train.caption_embeddings)
                else:
                    entry["model"] = bl.NearestNeighbour.fit(train.latents, train.caption_embeddings)
                history = getattr(entry["model"], "history", None)
                entry["divergence"] = divergence(history) if history else {"diverged": False}
            except Exception as error:   # a diverged run or a failed baseline: reported, the study goes on
                entry.update(error=f"{type(error).__name__}: {error}", divergence={"diverged": True})
            out[name].append(entry)
    return out


# --- the test splits, read once ----------------------------------------------------------------

def load_test_inputs(config: Config, setup: Setup) -> nb05.Inputs:
    """The test splits with fresh captions in both wordings, full and partial (embedded data), or
    their own captions (data without attributes); train, judge and captioner as on validation."""
    from invcap.features import load_features

    val, params = setup.val, setup.params
    splits, captions = {}, {}
    for name in TEST_SPLITS[params.dataset]:
        split = ev.Split.from_features(load_features(name, device=params.device, progress=False, **setup.data))
        splits[name], captions[name] = split, {"own": ev.CaptionSet.own(split)}
        if split.attributes is not None:
            for wording in WORDINGS:
                captions[name][wording] = nb05.caption_set(split, val.train.encoder, config.captions_per_image,
                                                           wording, seed=params.seed)
                captions[name][f"{wording} partial"] = nb05.caption_set(split, val.train.encoder, 1, wording, True,
                                                                        seed=params.seed)
    return replace(val, splits=splits, captions=captions)


def score_test(models: Mapping[str, list[dict]], inputs: nb05.Inputs, config: Config, params) -> dict[str, Any]:
    """Every row's test metrics, pooled over its seeds (``evaluation.summarize``), and per run its
    divergence and whether its rates collapsed against the row's other seeds."""
    scoring = replace(params, samples=config.samples, candidates=config.candidates)
    rows, runs = {}, {}
    for name, entries in models.items():
        scored = [nb05.score_model(e["model"], inputs, scoring) for e in entries if "model" in e]
        keys = set.intersection(*(set(s) for s in scored)) if scored else set()
        rows[name] = {k: ev.summarize([s[k] for s in scored], seed=params.seed) for k in sorted(keys)}
        runs[name] = [{"job": e["job"], "error": e.get("error"), "divergence": e["divergence"]} for e in entries]
        key = next((k for k in (f"compositional_test/training/all_correct", "test/own/r_precision") if k in keys), None)
        if key is not None:
            values = rows[name][key]["per_seed"]
            for run, value in zip([r for r in runs[name] if not r["error"]], values):
                run["collapsed"] = ev.collapsed(value, values)
    ceiling = {} if inputs.judge is None else nb05.ceiling(inputs)
    return {"rows": rows, "runs": runs, "ceiling": ceiling, "text_ceiling": text_ceiling(inputs)}


def text_ceiling(inputs: nb05.Inputs) -> dict[str, dict[str, dict]]:
    """Per test split and wording: how often a linear probe trained on the training captions
    (``evaluation.CaptionProbe``) reads every stated attribute from the very captions the rows are
    scored on. A wording whose attributes the embedding does not carry to such a reader is beyond
    any generator trained on the same captions. Empty without attributes."""
    if inputs.attributes is None:
        return {}
    train = inputs.train
    probe = ev.CaptionProbe.fit(train.caption_embeddings, train.attributes, train.mentions, inputs.attributes)
    return {name: {wording: {k: ev.summarize([v]) for k, v in ev.text_ceiling(probe, inputs.captions[name][wording],
                                                                              split).items()}
                   for wording in WORDINGS if wording in inputs.captions[name]}
            for name, split in inputs.splits.items()}


def goals(scores: Mapping[str, Any], chosen: str, paper_row: str) -> list[dict[str, Any]]:
    """Issue 13's goals on the test splits, for the method chosen on validation."""
    rows, out = scores["rows"], []
    row = rows.get(chosen, {})
    for (wording, kind), threshold in nb05.GOALS.items():
        split = "test" if kind == "seen" else "compositional_test"
        entry = row.get(f"{split}/{wording}/all_correct")
        if entry is not None:
            text = scores.get("text_ceiling", {}).get(split, {}).get(wording, {}).get("all_correct")
            out.append({"goal": f"{wording} wording, {kind} combinations: all-correct >= {threshold:.0f}%",
                        "threshold": threshold, **{k: entry[k] for k in ("value", "lo", "hi")},
                        "met": entry["value"] >= threshold, "margin": entry["value"] - threshold,
                        **({"text_ceiling": text["value"]} if text else {})})
    mine, paper = row.get("test/i2t_R@1"), rows.get(paper_row, {}).get("test/i2t_R@1")
    if mine and paper:
        out.append({"goal": f"captioning R@1 through f >= the {paper_row} row's ({paper['value']:.1f})",
                    "threshold": paper["value"], **{k: mine[k] for k in ("value", "lo", "hi")},
                    "met": mine["value"] >= paper["value"], "margin": mine["value"] - paper["value"]})
    unstable = [f"{name} seed {r['job'].get('overrides', {}).get('seed')}"
                + (f" (failed: {r['error'][:120]})" if r.get("error") else "")
                for name in (chosen, f"{chosen} (portable path)") for r in scores["runs"].get(name, [])
                if r["divergence"].get("diverged") or r.get("collapsed")]
    runs = len(scores["runs"].get(chosen, [])) + len(scores["runs"].get(f"{chosen} (portable path)", []))
    out.append({"goal": "the chosen method trains without divergence on every seed, both numeric paths",
                "threshold": 0, "value": len(unstable), "met": not unstable and runs > 0, "margin": -len(unstable),
                "detail": unstable or f"{runs} runs, none diverged or collapsed"})
    return out


# --- the whole study -------------------------------------------------------------------------

def run(config: Config = Config()) -> dict[str, Any]:
    """Choices on validation, the final runs, the test splits scored once; writes the results,
    the figures and the generator bundle. Returns the results."""
    from invcap.generator import autoencoder_parts, default_generator_path, save_generator
    from invcap.studies.common import show

    watch = Stopwatch()
    with watch("setup"):
        setup = load_setup()
    with watch("steps on validation"):
        steps = choose_steps(config, setup)
    weights = None if steps["inverse_weight"] is None else _weights(setup, steps["inverse_weight"])
    with watch("two-networks MLPs on validation"):
        reference = train_one(_method_job(setup.chosen, setup, steps["steps"], 0, weights=weights), setup.val.train)
        mlp = tune_mlp(config, setup, steps["steps"], parameter_count(reference.net))
    rows = final_jobs(config, setup, steps["steps"], mlp, weights)
    with watch("final trainings"):
        reports = run_jobs([j for jobs in rows.values() for job in jobs for j in _trainable(job)], setup.data,
                           config.workers, train=setup.val.train)
        errors = failed_jobs(reports)
        models = load_models(rows, setup, errors)
    with watch("test splits (read once)"):
        inputs = load_test_inputs(config, setup)
        scores = score_test(models, inputs, config, setup.params)
    paper_row = "paper (notebook 03)" if "paper (notebook 03)" in rows else "paper"
    results = {"run": None, "config": asdict(config), "chosen": {"method": setup.chosen, "by": "notebook 05 on "
                                                                  "validation (results/closing_the_gap.json)"},
               "steps": steps, "mlp": mlp, "paper_row": paper_row,
               "paper_source": None if setup.paper is None else setup.paper[1],
               "generator": {"method": setup.chosen, "steps": steps["steps"], "lr": setup.params.lr, "seed": 0,
                             "weights": weights},
               "mlp_parameters": parameter_count(reference.net), "chance_all_correct": None if inputs.attributes is None
               else ev.chance_all_correct(inputs.attributes), **scores}
    results["goals"] = goals(scores, setup.chosen, paper_row)
    chosen = models[setup.chosen][0]
    if "model" in chosen:
        save_generator(default_generator_path(), chosen["model"], *autoencoder_parts(setup.val.train),
                       info=results["generator"])
    with watch("figures"):
        show(plot_final(results), "05_final_table.png")
        names = [setup.chosen, "two networks", "least squares", "nearest neighbour", paper_row]
        first = {n: e[0]["model"] for n, e in models.items() if e and "model" in e[0]}
        show(nb05.plot_grid(nb05.grid_picks(inputs, WORDINGS), first, names, inputs.decode, inputs.judge),
             "05_typed_captions.png")
        show(plot_stability(models, setup.chosen), "05_training_stability.png")
        if inputs.attributes is not None:
            show(nb05.plot_partial(results, "test/training partial"), "05_partial_captions_test.png")
    results["run"] = run_record(asdict(config), 0, setup.params.device, data=setup.val.data_key, timings=watch.seconds)
    write_json_atomic(results_dir() / RESULTS, results)
    return results


from invcap.studies.nb05_figures import plot_final, plot_stability  # noqa: E402,F401


# --- README, key numbers, command line ---------------------------------------------------------

def _cell(row: Mapping, key: str) -> str:
    e = row.get(key)
    return "–" if e is None else f"{e['value']:.1f} [{e['lo']:.1f}, {e['hi']:.1f}]"


def render_table(results_folder: Path) -> str:
    path = results_folder / RESULTS
    if not path.is_file():
        return "_the final table has not run yet (`python -m invcap.studies.final_table`)_"
    r = read_json(path)
    keys = ([(f"{w}, {k}", f"{s}/{w}/all_correct") for w in WORDINGS for s, k in
             (("test", "seen"), ("compositional_test", "unseen"))] if r["ceiling"] else
            [("R-precision", "test/own/r_precision")])
    keys += [("R@1 via f", "test/i2t_R@1"), ("R@1 via f⁻¹", "test/inv_i2t_R@1")]
    lines = ["| row | runs | " + " | ".join(k for k, _ in keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for name, row in r["rows"].items():
        failed = sum(1 for run in r["runs"][name] if run.get("error"))
        bad = sum(1 for run in r["runs"][name] if not run.get("error") and (run["divergence"].get("diverged")
                                                                             or run.get("collapsed")))
        runs = f"{len(r['runs'][name])}" + (f" ({bad} diverged)" if bad else "") + (f" ({failed} failed)" if failed else "")
        bold = "**" if name == r["chosen"]["method"] else ""
        lines.append(f"| {bold}{name}{bold} | {runs} | " + " | ".join(_cell(row, k) for _, k in keys) + " |")
    ceiling = "; ".join(f"{n} {_cell(c, 'all_correct')}" for n, c in r["ceiling"].items())
    rank = nb05.METHODS[r["chosen"]["method"]].image_rank if r["chosen"]["method"] in nb05.METHODS else 0
    subspace = "; ".join(f"{n} {_cell(c, f'rank{rank}_all_correct')}" for n, c in r["ceiling"].items()
                         if f"rank{rank}_all_correct" in c)
    text = r.get("text_ceiling", {})
    text_line = "; ".join(f"{n}, {w} wording {_cell(c, 'all_correct')}" for n, ws in text.items() for w, c in ws.items())
    goal_lines = [f"- {g['goal']}: **{'met' if g['met'] else 'missed'}**" +
                  (f" ({g['value']:.1f} [{g['lo']:.1f}, {g['hi']:.1f}], {g['margin']:+.1f} points"
                   + (f"; text ceiling {g['text_ceiling']:.1f}" if "text_ceiling" in g else "") + ")" if "lo" in g
                   else f" ({g['detail']})") for g in r["goals"]]
    ceilings = [f"Decoder ceiling (judge on reconstructions of the real test images, % all-correct): {ceiling or '–'}."]
    if subspace:
        ceilings.append(f"The chosen method draws inside the image latents' {rank} principal directions; the judge on "
                        f"decoded rank-{rank} projections of the real test latents: {subspace}.")
    if text_line:
        ceilings.append(f"Text ceiling (a linear probe trained on the training captions reads every stated attribute "
                        f"from the caption embedding, % of the scored captions): {text_line}. No generator trained on "
                        f"the same captions can be expected to draw what the embedding does not carry to such a "
                        f"reader.")
    steps = r["steps"]
    return "\n".join(lines + ["", " ".join(ceilings), "",
                              f"Training seeds {list(r['config']['seeds'])} per row (the paper row: notebook 03's "
                              f"network and its configuration with further seeds); the closed-form baselines have "
                              f"none. Timings: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in
                                                             (r['run'] or {}).get('timings', {}).items()) + ".", "",
                              f"Chosen on validation: `{r['chosen']['method']}` (notebook 05), {steps['steps']} steps"
                              + (f", inverse weight {steps['inverse_weight']:g}" if steps.get("inverse_weight")
                                 is not None else "") + f" ({steps['rule']}). " + _grid_text(steps), ""]
                 + goal_lines + _versus(r))


def _grid_text(steps: Mapping) -> str:
    """The validation grid of ``choose_steps``, as one sentence."""
    if "val" not in steps:   # a results file from before the weight grid
        return "Validation unseen rate by steps: " + ", ".join(f"{s}: {v:.1f}" for s, v in steps["val_unseen"].items()) + "."
    def number(v: float | None) -> str:   # a diverged run's rates are null in the results file
        return "–" if v is None or not math.isfinite(v) else f"{v:.1f}"

    def one(e: Mapping) -> str:
        weight = "" if e["inverse_weight"] is None else f"weight {e['inverse_weight']:g}, "
        return f"{weight}{e['steps']} steps: {number(e['unseen'])} / {number(e['seen'])} % (R@1 {number(e['r1'])})"
    return "Validation grid, unseen / seen all-correct and val R@1 through f: " + "; ".join(one(e) for e in steps["val"]) + "."


def _versus(r: Mapping) -> list[str]:
    """The chosen invertible method against the two-networks baseline, stated from the numbers."""
    chosen, rows = r["chosen"]["method"], r["rows"]
    other = rows.get("two networks")
    if not other or not r["ceiling"] or chosen not in rows:
        return []
    parts = []
    for wording in WORDINGS:
        for split, kind in (("test", "seen"), ("compositional_test", "unseen")):
            a, b = rows[chosen].get(f"{split}/{wording}/all_correct"), other.get(f"{split}/{wording}/all_correct")
            if a and b:
                overlap = a["lo"] <= b["hi"] and b["lo"] <= a["hi"]
                which = "the invertible network" if a["value"] > b["value"] else "the two networks"
                parts.append(f"{wording} wording, {kind}: {a['value']:.1f} vs {b['value']:.1f} ({which} higher"
                             + (", within each other's 95% intervals)" if overlap else ", intervals apart)"))
    return ["", f"The invertible network against two dedicated networks (all-correct %, `{chosen}` vs two "
                f"networks): " + "; ".join(parts) + "."]


def render_limitations(results_folder: Path) -> str:
    """The Limitations section's list, its numbers read from the data modules and the final table."""
    import numpy as np

    from invcap.data.embedded import ATTRIBUTES
    from invcap.data.heldout_wording import HELDOUT
    from invcap.data.wording import TRAINING

    path = results_folder / RESULTS
    r = read_json(path) if path.is_file() else None
    params = read_json(results_folder / nb05.RESULTS)["params"] if (results_folder / nb05.RESULTS).is_file() else {}
    size = params.get("image_size", 32)
    combos = int(np.prod([len(v) for v in ATTRIBUTES.values()]))
    values = "–".join(str(n) for n in sorted({min(len(v) for v in ATTRIBUTES.values()),
                                             max(len(v) for v in ATTRIBUTES.values())}))
    if r is None:
        compute = "the final table has not run yet, so nothing here is measured over several seeds"
    else:
        c = r["config"]
        compute = (f"short trainings ({r['steps']['steps']} steps chosen from {list(c['step_grid'])}), "
                   f"{len(c['seeds'])} training seeds, one dataset seed")
    return "\n".join([
        f"- **Toy images.** {size}×{size} procedural renders with one object on a dark background and "
        f"{len(ATTRIBUTES)} attributes of {values} values each ({combos} combinations). Nothing here says how the "
        f"methods fare on photographs; Flickr30k runs through the same code (`make flickr30k`) but has no attribute "
        f"judge, only retrieval, R-precision and PSNR/SSIM.",
        f"- **A judge the study trained itself.** Generated images are scored by a small CNN trained on renders of "
        f"the same procedural generator. It is checked on real images (≥ {ev.JUDGE_REQUIRED:.0f}% all-correct "
        f"required) and never sees a decoded image, but a blind spot shared by judge and generator would go "
        f"unnoticed.",
        "- **The decoder ceiling.** Every generated image passes through the autoencoder's decoder; the judge's "
        "score on reconstructions of the real images bounds what any generator can reach, and it is printed beside "
        "the rates.",
        f"- **Wording.** The training wording has {len(TRAINING.templates)} sentence shapes and everyday synonyms; "
        f"the held-out wording is a second, disjoint vocabulary of {len(HELDOUT.templates)} shapes, written by the "
        f"same people. Real users will write captions neither anticipates." + _text_limit(r),
        "- **A frozen sentence encoder.** all-MiniLM-L6-v2 is the paper's choice and the only one available offline "
        "here; every generator reads its embedding, so what it does not carry from a wording to a reader trained on "
        "the training captions (the text ceiling) no method here can recover.",
        f"- **Compute.** Every number comes from 2 CPU cores: {compute}. Intervals cover the choice of attribute "
        f"combinations and of training seeds, not the dataset draw, the judge's training or the autoencoder's."])


def _text_limit(r: Mapping | None) -> str:
    """The held-out wording's text ceiling, as a sentence (empty before the final table has run)."""
    text = (r or {}).get("text_ceiling", {})
    held = [(n, ws["heldout"]["all_correct"]["value"]) for n, ws in text.items() if "heldout" in ws]
    if not held:
        return ""
    return (" A linear probe trained on the training captions reads every attribute from only "
            + " / ".join(f"{v:.1f} %" for _, v in held) + f" of the held-out wording's test captions ("
            + " / ".join(n for n, _ in held) + "): the embedding does not carry the held-out phrases to the "
            "training phrases, so no model trained on this wording can be expected to reach the held-out goals with this "
            "encoder.")


def glance_row(folder: Path) -> str:
    """The README overview's row (``invcap.studies.overview``): the paper's future-work claim, on test."""
    r = read_json(folder / RESULTS, "python -m invcap.studies.final_table (make paper)")
    chosen, rows = r["chosen"]["method"], r["rows"]
    goals_ = [g for g in r["goals"] if "wording" in g["goal"]]
    if not goals_:   # data without attributes: no all-correct rates
        return (f"| (future work) make inversion of real captions produce meaningful images | `{chosen}`: "
                f"R-precision {_cell(rows[chosen], 'test/own/r_precision')} % on test | see the final table |")
    rate = {(g["goal"].split(" wording")[0], "unseen" if "unseen" in g["goal"] else "seen"): g for g in goals_}

    def pair(name: str, wording: str) -> str:
        row = rows.get(name, {})
        v = [row.get(f"{s}/{wording}/all_correct") for s in ("test", "compositional_test")]
        return " / ".join("–" if e is None else f"{e['value']:.1f}" for e in v)

    missed = [g for g in goals_ if not g["met"]]
    held_ceiling = " / ".join(f"{g['text_ceiling']:.1f}" for g in goals_ if g["goal"].startswith("heldout")
                              and "text_ceiling" in g)
    r1 = next((g for g in r["goals"] if g["goal"].startswith("captioning")), None)
    stable = next((g for g in r["goals"] if "divergence" in g["goal"]), None)
    return (f"| (future work) make inversion of real captions produce meaningful images | `{chosen}` "
            f"({r['steps']['steps']} steps, {len(r['config']['seeds'])} seeds), all attributes right on test, "
            f"seen / unseen combinations: {pair(chosen, 'training')} % in the training wording, "
            f"{pair(chosen, 'heldout')} % in a held-out wording (paper's training: {pair(r['paper_row'], 'training')} %;"
            f" two dedicated MLPs: {pair('two networks', 'training')} %); captioning R@1 through f "
            f"{rows[chosen]['test/i2t_R@1']['value']:.1f} (paper {rows[r['paper_row']]['test/i2t_R@1']['value']:.1f})"
            f" | goals (97 / 92 %, held-out 90 / 80 %) **{'met' if not missed else 'missed'}**"
            + (f" by {min(-g['margin'] for g in missed):.0f} to {max(-g['margin'] for g in missed):.0f} points"
               if missed else "")
            + (f"; the held-out wording's text ceiling is {held_ceiling} %" if held_ceiling else "")
            + (f"; R@1 goal **{'met' if r1['met'] else 'missed'}**" if r1 else "")
            + (f"; no divergence: **{'met' if stable['met'] else 'missed'}**" if stable else "") + " |")


README_BLOCKS = {"final-table": render_table, "gap-limitations": render_limitations}


def _goal_value(index: int):
    return lambda folder: float(read_json(folder / RESULTS)["goals"][index]["value"])


KEY_NUMBERS = {"final: chosen method, test seen all-correct, training wording (%)": _goal_value(0),
               "final: chosen method, test unseen all-correct, training wording (%)": _goal_value(1),
               "final: chosen method, test seen all-correct, held-out wording (%)": _goal_value(2),
               "final: chosen method, test unseen all-correct, held-out wording (%)": _goal_value(3)}


def config_from(params_file: str | None, sets: Sequence[str]) -> Config:
    """``Config`` from a parameters file's ``final_table`` section and shared entries (upper-case
    names of its fields: SEEDS, STEP_GRID, WORKERS, ...) and ``--set NAME=VALUE`` overrides."""
    from invcap.studies.common import params_from_namespace
    from invcap.studies.notebooks import params_for, parse_overrides, read_params

    values = params_for("final_table", read_params(params_file), parse_overrides(sets))
    config = params_from_namespace(Config, values)
    return replace(config, **{f: tuple(getattr(config, f)) for f in ("seeds", "step_grid", "inverse_weights",
                                                                     "mlp_layers", "mlp_lrs", "methods")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=None, help="a YAML parameters file (its final_table section)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                        help="override one Config field by its upper-case name, e.g. --set SEEDS=[0,1]")
    args = parser.parse_args(argv)
    try:
        results = run(config_from(args.params, args.sets))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for goal in results["goals"]:
        print(f"{goal['goal']}: {'met' if goal['met'] else 'missed'} ({goal['value']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

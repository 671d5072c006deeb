"""Notebook 04 (``notebooks/04_inversion_analysis.ipynb``): the inverse direction of notebook 03's
network (paper, section 3.2, findings 2 and 3) and why it fails.

Notebook 04 takes no model parameters: ``load`` reads notebook 03's network from
``results/captioning.json`` (``nb03_captioning.load_network_from_results``). Steps: ``load`` ->
``generation`` (finding 2, with a nearest-neighbour attribute judge) -> ``noise_study`` (finding 3:
inverting y_pred + noise, the largest acceptable sigma) -> ``amplification_study`` (conditioning,
measured amplification, Jacobians, principal axes, volume) -> ``write_results``
(``results/inversion.json``). ``verdicts``/``tables``/``summary_text`` print from the results.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Sequence

import torch

from invcap import features as fe
from invcap.captioning import embedding_errors, invert, predict
from invcap.features import Features
from invcap.inn import InvertibleMLP
from invcap.inversion import (amplification, attribute_accuracy, conditioning_record, directional_gains, generate,
                              image_scores, jacobian_gains, nearest_neighbour_attributes, noise_sweep, spearman,
                              volume_contraction)
from invcap.io import read_json, results_dir, write_json_atomic
from invcap.linalg import principal_directions
from invcap.repro import resolve_device, run_record
from invcap.studies import nb02_autoencoder, nb03_captioning
from invcap.studies.common import NotebookParams

__all__ = ["Params", "Setup", "load", "generation", "chance_levels", "nearest_neighbour_judge", "noise_study",
           "largest_acceptable_sigma", "amplification_study", "generation_grid", "user_grid", "write_results", "load_results", "verdicts", "tables",
           "summary_text", "plot_image_rows", "plot_noise_sweep", "plot_amplification", "glance_rows", "README_BLOCKS",
           "KEY_NUMBERS"]

RESULTS = "inversion.json"
AMPLIFICATION_STEP = 1e-9   # a step small enough for f^-1's linear regime in float64
EMPTY_AXIS = 1e-6           # a principal axis whose std is below this fraction of the largest is "empty"
# Half decades where inversion breaks down (1e-11 .. 1e-6), decades elsewhere: 17 points.
SIGMAS = [1e-12, 1e-11, 3e-11, 1e-10, 3e-10, 1e-9, 3e-9, 1e-8, 3e-8, 1e-7, 3e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
USER_CAPTIONS = ["a large red circle in the top left corner", "a small blue square at the bottom right",
                 "A green triangle.", "a yellow cross"]


@dataclass(frozen=True)
class Params(NotebookParams):
    seed: int = 0
    device: str = "auto"
    user_captions: list[str] = field(default_factory=lambda: list(USER_CAPTIONS))
    n_grid: int = 8
    sigmas: list[float] = field(default_factory=lambda: list(SIGMAS))
    n_directions: int = 32     # test embeddings at which the gain along every principal axis is measured
    n_jacobian: int = 32       # test latents whose exact Jacobian is decomposed
    paper_noise: float = 1e-4  # the paper's N(0, 1e-4): read as a standard deviation and as a variance
    acceptable_db: float = 1.0  # "acceptable": PSNR at most this far below the noise-free inversion


@dataclass
class Setup:
    """Notebook 03's network and the frozen pieces around it."""

    net: InvertibleMLP
    captioning: dict[str, Any]   # notebook 03's results
    train: Features
    test: Features

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        decoder = self.test.autoencoder
        return decoder.decode(z.to(next(decoder.parameters()).device)).cpu()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.test.encoder.encode(texts, progress=False)


def load(params: Params, folder: Path | None = None, progress: bool = True) -> Setup:
    """Notebook 03's network (from its results file) and the train/test features it was made on."""
    net, captioning = nb03_captioning.load_network_from_results(folder, device=params.device, progress=progress)
    kwargs = nb03_captioning.features_kwargs(captioning)
    train, test = (fe.load_features(s, **kwargs, device=params.device, progress=progress) for s in ("train", "test"))
    return Setup(net, captioning, train, test)


# --- finding 2: generating from real captions -------------------------------------------------

def chance_levels(attributes: Sequence[dict[str, Hashable]]) -> dict[str, float]:
    """Percent correct of a judge that guesses uniformly among the values seen in ``attributes``;
    "all" (every attribute right) is the product."""
    chance = {name: 100.0 / len({a[name] for a in attributes}) for name in attributes[0]}
    chance["all"] = 100.0 * math.prod(c / 100.0 for c in chance.values())
    return chance


def nearest_neighbour_judge(images: dict[str, torch.Tensor], train: Features, test: Features) -> dict[str, Any]:
    """Attributes of each image's nearest training image (pixels), scored against the test
    images' attributes: per named set of images, percent correct per attribute and for all."""
    return {"accuracy_percent": {name: attribute_accuracy(nearest_neighbour_attributes(x, train.images, train.attributes),
                                                          test.attributes) for name, x in images.items()},
            "chance_percent": chance_levels(train.attributes)}


@dataclass
class Generated:
    """What the later steps and the figures need from ``generation``."""

    y_pred: torch.Tensor         # f(z) of the test latents, float32
    y_pred64: torch.Tensor       # f(z) in float64
    caption_embeddings: torch.Tensor  # E_T of each test image's first caption
    images: dict[str, torch.Tensor]   # name -> (N, 3, H, W): reconstruction, round trip, from caption
    captions: list[str]
    user_images: torch.Tensor
    user_nonfinite: int


def generation(setup: Setup, params: Params) -> tuple[dict[str, Any], Generated]:
    """decoder(f^-1(E_T(caption))) for every test image's first caption, scored against the image
    beside decoder(z) and decoder(f^-1(f(z))) in float32 and float64; the attribute judge on
    the embedded dataset; the user's captions."""
    net, test = setup.net, setup.test
    y_pred, y_pred64 = predict(net, test.latents), predict(net, test.latents, dtype=torch.float64)
    captions = [caps[0] for caps in test.captions]
    from_caption = generate(net, setup.encode, setup.decode, captions)
    images = {"autoencoder reconstruction": setup.decode(test.latents),
              "inverted y_pred": setup.decode(invert(net, y_pred)),
              "generated from caption": from_caption.images}
    exact = noise_sweep(net, setup.decode, y_pred64, test.images, [0.0], progress=False, dtype=torch.float64)[0]
    quality = {"autoencoder reconstruction": image_scores(images["autoencoder reconstruction"], test.images),
               "inverted y_pred (float64)": {k: exact[k] for k in ("psnr", "ssim", "n_nonfinite", "n")},
               "inverted y_pred": image_scores(images["inverted y_pred"], test.images),
               "generated from caption": image_scores(from_caption.images, test.images)}
    user = generate(net, setup.encode, setup.decode, params.user_captions)
    judge = nearest_neighbour_judge(images, setup.train, test) if test.attributes is not None else None
    out = {"quality": quality, "attribute_judge": judge,
           "user_captions": {"captions": list(params.user_captions), "n_nonfinite": user.n_nonfinite},
           "n_nonfinite_from_caption": from_caption.n_nonfinite}
    return out, Generated(y_pred, y_pred64, from_caption.embeddings, images, captions, user.images, user.n_nonfinite)


def generation_grid(setup: Setup, gen: Generated, n: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The first ``n`` test images in four rows (truth, decoder(z), float32 round trip, from the
    caption) and their captions, for ``plot_image_rows``."""
    rows = {"true image": setup.test.images[:n], "decoder(z)": gen.images["autoencoder reconstruction"][:n],
            "decoder(f⁻¹(y_pred)), float32": gen.images["inverted y_pred"][:n],
            "decoder(f⁻¹(E_T(caption)))": gen.images["generated from caption"][:n]}
    return rows, gen.captions[:n]


def user_grid(gen: Generated, params: Params) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The images generated from the user's captions, for ``plot_image_rows``."""
    return {"decoder(f⁻¹(E_T(caption)))": gen.user_images}, list(params.user_captions)


# --- finding 3: how far from y_pred does inversion still work? -------------------------------------

def largest_acceptable_sigma(rows: list[dict[str, float]], tolerance_db: float) -> float:
    """The largest sigma of a sweep (rows sorted by sigma, the first at sigma = 0) up to which
    every inversion stays within ``tolerance_db`` of the noise-free PSNR; 0 when even the
    smallest fails."""
    if not rows or rows[0]["sigma"] != 0:
        raise ValueError("the sweep must start with the noise-free row (sigma = 0)")
    floor, largest = rows[0]["psnr"] - tolerance_db, 0.0
    for row in rows[1:]:
        if not row["psnr"] >= floor:  # NaN (non-finite images) fails too
            break
        largest = row["sigma"]
    return largest


def noise_study(setup: Setup, gen: Generated, params: Params, progress: bool = True) -> dict[str, Any]:
    """Invert y_pred + sigma N(0, I) over the sweep (float32 and float64), read the paper's noise
    as a std and as a variance, and measure how far real captions lie from y_pred."""
    paper = {"std": params.paper_noise, "variance": math.sqrt(params.paper_noise)}
    sigmas = sorted(set(params.sigmas) | set(paper.values()))
    sweeps = {name: noise_sweep(setup.net, setup.decode, y, setup.test.images, [0.0] + sigmas, seed=params.seed,
                                progress=progress, dtype=dtype)
              for name, (dtype, y) in {"float32": (torch.float32, gen.y_pred),
                                       "float64": (torch.float64, gen.y_pred64)}.items()}
    by_sigma = {name: {row["sigma"]: row for row in rows} for name, rows in sweeps.items()}
    noise_free = {name: rows[0]["psnr"] for name, rows in sweeps.items()}
    paper_rows = {name: {kind: {**by_sigma[name][s], "acceptable": by_sigma[name][s]["psnr"] >= noise_free[name]
                                - params.acceptable_db} for kind, s in paper.items()} for name in sweeps}
    errors = embedding_errors(gen.y_pred, setup.test.caption_embeddings)
    distance = {"one caption": math.sqrt(errors["mse_per_caption"]), "mean caption": math.sqrt(errors["mse_mean_caption"]),
                "first caption": float((gen.caption_embeddings - gen.y_pred).pow(2).mean().sqrt())}
    return {"noise_sweep": sweeps, "paper_noise": paper_rows,
            "acceptable_definition": f"PSNR within {params.acceptable_db:g} dB of the same precision's noise-free "
                                     f"inversion, for this sigma and every smaller one of the sweep",
            "largest_acceptable_sigma": {n: largest_acceptable_sigma(r, params.acceptable_db) for n, r in sweeps.items()},
            "distance_y_pred_to_caption_rms": distance}


# --- why: conditioning and amplification ------------------------------------------------------------

def amplification_study(setup: Setup, gen: Generated, params: Params) -> tuple[dict[str, Any], dict[str, Any]]:
    """Layer conditioning, measured amplification ||dx|| / ||dy|| of f^-1 (random and caption
    directions, tiny and full steps, the Jacobian's worst direction), the gain along each
    principal axis of the caption embeddings, and f's volume change. Returns (results, arrays
    for the figure)."""
    net, y = setup.net, gen.y_pred64
    random_dirs = torch.randn(y.shape, generator=torch.Generator().manual_seed(params.seed), dtype=torch.float64)
    caption_dirs = gen.caption_embeddings.double() - y
    ratios = {"random direction, tiny step": amplification(net, y, random_dirs, AMPLIFICATION_STEP),
              "caption direction, tiny step": amplification(net, y, caption_dirs, AMPLIFICATION_STEP),
              "caption direction, full step": amplification(net, y, caption_dirs, caption_dirs.norm(dim=1)),
              "worst direction (1/σ_min of J_f)":
                  jacobian_gains(net, setup.test.latents[:params.n_jacobian])["inverse_gain"]}
    pca = principal_directions(setup.train.caption_embeddings)
    gains = directional_gains(net, y[:params.n_directions], pca.directions, AMPLIFICATION_STEP)
    empty = int((pca.std < EMPTY_AXIS * pca.std[0]).sum())
    kept = len(pca.std) - empty   # axes the captions actually span
    results = {"conditioning": conditioning_record(net),
               "amplification": {name: {"median": float(r.median()), "max": float(r.max()), "min": float(r.min()),
                                        "n": int(r.numel())} for name, r in ratios.items()},
               "amplification_step": AMPLIFICATION_STEP,
               "caption_principal_axes": {"std": pca.std.tolist(), "median_gain": gains.tolist(),
                                          "n_empty_axes": empty, "empty_below_fraction_of_largest": EMPTY_AXIS,
                                          "n_points": params.n_directions,
                                          "spearman_gain_vs_spread": spearman(pca.std[:kept], gains[:kept])},
               "volume": volume_contraction(net, setup.test.latents)}
    return results, {"ratios": ratios, "gains": gains, "spread": pca.std}


def write_results(params: Params, setup: Setup, parts: list[dict[str, Any]], timings: dict[str, float]) -> dict[str, Any]:
    """``results_dir()/inversion.json`` from the step results; returns what it wrote."""
    network = setup.captioning["network"]
    results: dict[str, Any] = {
        "run": run_record({**params.as_dict(), "network": network}, params.seed, resolve_device(params.device),
                          data=setup.train.info["data_key"], timings=timings),
        "checkpoint": Path(network["checkpoint"]).name, "n_test": len(setup.test), "depth": network["config"]["depth"],
        "negative_slope": network["config"]["negative_slope"], "features": setup.net.features,
        "paper_noise_level": params.paper_noise, "acceptable_db": params.acceptable_db}
    for part in parts:
        results.update(part)
    write_json_atomic(results_dir() / RESULTS, results)
    return results


def load_results(folder: Path | None = None) -> dict[str, Any]:
    return read_json((folder or results_dir()) / RESULTS, "notebooks/04_inversion_analysis.ipynb")


# --- what the notebook prints ----------------------------------------------------------------

def verdicts(results: dict[str, Any], part: str) -> str:
    """The checked cells' text (``part``: "generation", "noise" or "amplification")."""
    lines: list[str] = []
    if part == "generation":
        q = results["quality"]
        ae_q, exact, caption = q["autoencoder reconstruction"], q["inverted y_pred (float64)"], q["generated from caption"]
        lines.append(f"exact (float64) round trip decoder(f^-1(f(z))) within 0.5 dB of decoder(z): "
                     f"{abs(exact['psnr'] - ae_q['psnr']) < 0.5}")
        lines.append(f"finding 2: images from real captions over 15 dB below the autoencoder's PSNR: "
                     f"{caption['psnr'] < ae_q['psnr'] - 15}")
        if results["attribute_judge"] is not None:
            acc = results["attribute_judge"]["accuracy_percent"]
            chance = results["attribute_judge"]["chance_percent"]
            lines.append(f"judge reads the autoencoder's reconstructions at least 80% all-correct: "
                         f"{acc['autoencoder reconstruction']['all'] >= 80}")
            lines.append(f"finding 2: every attribute of images from captions within 15 points of chance: "
                         f"{all(abs(acc['generated from caption'][k] - chance[k]) < 15 for k in chance if k != 'all')}")
    elif part == "noise":
        for precision, rows in results["paper_noise"].items():
            lines.append(f"finding 3 ({precision}): the paper's noise acceptable read as std / as variance: "
                         f"{rows['std']['acceptable']} / {rows['variance']['acceptable']}")
        largest, distance = results["largest_acceptable_sigma"], results["distance_y_pred_to_caption_rms"]
        lines.append(f"largest acceptable sigma (float64) over 10^6x below the RMS distance to the mean caption: "
                     f"{largest['float64'] * 1e6 < distance['mean caption']}")
    elif part == "amplification":
        bound = results["conditioning"]["inverse_lipschitz_bound"]
        medians = [a["median"] for a in results["amplification"].values()]
        lines.append(f"Lipschitz bound of f^-1 above 1e9: {bound > 1e9}")
        lines.append(f"every median amplification above 1e5: {min(medians) > 1e5}")
        lines.append(f"every measured amplification within the Lipschitz bound: "
                     f"{all(a['max'] <= bound * (1 + 1e-6) for a in results['amplification'].values())}")
    else:
        raise ValueError(f"part must be 'generation', 'noise' or 'amplification', got {part!r}")
    return "\n".join(lines)


def tables(results: dict[str, Any], part: str) -> str:
    """Exact numbers (printed under NBVAL_IGNORE_OUTPUT)."""
    lines: list[str] = []
    if part == "generation":
        lines.append(f"{'images':28s} {'PSNR (dB)':>9s} {'SSIM':>6s} {'non-finite':>10s}")
        for name, q in results["quality"].items():
            lines.append(f"{name:28s} {q['psnr']:9.2f} {q['ssim']:6.3f} {q['n_nonfinite']:10d}")
        judge = results["attribute_judge"]
        if judge is not None:
            keys = list(judge["chance_percent"])
            lines += ["", "attributes read back by the nearest-neighbour judge (% correct):",
                      f"{'':28s} " + " ".join(f"{k:>8s}" for k in keys)]
            for name, acc in {**judge["accuracy_percent"], "chance": judge["chance_percent"]}.items():
                lines.append(f"{name:28s} " + " ".join(f"{acc[k]:8.1f}" for k in keys))
    elif part == "noise":
        s32, s64 = results["noise_sweep"]["float32"], results["noise_sweep"]["float64"]
        lines.append(f"{'':8s} {'float32 inversion':>27s}   {'float64 inversion':>27s}")
        lines.append(f"{'sigma':>8s} {'PSNR (dB)':>9s} {'SSIM':>6s} {'RMS dx':>8s}   {'PSNR (dB)':>9s} {'SSIM':>6s} "
                     f"{'RMS dx':>8s} {'non-finite':>10s}")
        for a, b in zip(s32, s64):
            lines.append(f"{a['sigma']:8.0e} {a['psnr']:9.2f} {a['ssim']:6.3f} {a['rms_dx']:8.1e}   {b['psnr']:9.2f} "
                         f"{b['ssim']:6.3f} {b['rms_dx']:8.1e} {a['n_nonfinite'] + b['n_nonfinite']:10d}")
        for precision, sigma in results["largest_acceptable_sigma"].items():
            lines.append(f"{precision}: largest acceptable sigma {sigma:.0e} ({results['acceptable_definition']})")
        d = results["distance_y_pred_to_caption_rms"]
        lines.append(f"RMS distance per coordinate from y_pred to one caption {d['one caption']:.2e}, to the mean "
                     f"caption {d['mean caption']:.2e}, to the first caption {d['first caption']:.2e}")
    elif part == "amplification":
        c = results["conditioning"]
        lines.append(f"{'layer':>5s} {'sigma_min':>10s} {'sigma_max':>10s} {'condition':>10s}")
        for layer in c["layers"]:
            lines.append(f"{layer['index'] + 1:5d} {layer['sigma_min']:10.2e} {layer['sigma_max']:10.2e} "
                         f"{layer['condition_number']:10.2e}")
        lines.append(f"Lipschitz bound of f^-1: {c['inverse_lipschitz_bound']:.2e}")
        lines.append("median amplification ||dx|| / ||dy||:")
        for name, a in results["amplification"].items():
            lines.append(f"  {name:34s} {a['median']:9.2e}  (over {a['n']} points)")
        p, v = results["caption_principal_axes"], results["volume"]
        lines.append(f"caption embeddings: {p['n_empty_axes']} of {len(p['std'])} principal axes with std below "
                     f"{p['empty_below_fraction_of_largest']:g} of the largest; rank correlation of gain and spread "
                     f"over the others {p['spearman_gain_vs_spread']:.2f}")
        lines.append(f"volume scale per coordinate: f {v['scale_per_dim']:.4f}, W_i alone {v['weights_scale_per_dim']:.3f}, "
                     f"LeakyReLU floor {v['activation_floor_per_dim']:.4f}")
    else:
        raise ValueError(f"part must be 'generation', 'noise' or 'amplification', got {part!r}")
    return "\n".join(lines)


def summary_text(results: dict[str, Any]) -> str:
    """The closing narrative (bullets), every number from ``results``."""
    q, judge = results["quality"], results["attribute_judge"]
    lines = [f"- Finding 2 (real captions): images generated from test captions reach "
             f"{q['generated from caption']['psnr']:.1f} dB PSNR / SSIM {q['generated from caption']['ssim']:.2f} against "
             f"their images, versus {q['inverted y_pred']['psnr']:.1f} dB for the inverted prediction (float32; "
             f"{q['inverted y_pred (float64)']['psnr']:.1f} dB in float64) and "
             f"{q['autoencoder reconstruction']['psnr']:.1f} dB for the autoencoder itself."]
    if judge is not None:
        acc, chance = judge["accuracy_percent"]["generated from caption"], judge["chance_percent"]
        above = [k for k in chance if k != "all" and acc[k] > chance[k] + 10]
        lines.append("  The nearest-neighbour judge reads the caption's attributes back from them at "
                     + ", ".join(f"{k} {acc[k]:.0f}% (chance {chance[k]:.0f}%)" for k in chance if k != "all")
                     + (f": clearly above chance only for {', '.join(above)}." if above else ": none clearly above chance."))
    paper, tol = results["paper_noise_level"], results["acceptable_db"]
    for precision, rows in results["paper_noise"].items():
        noise_free = results["noise_sweep"][precision][0]["psnr"]
        ok = [kind for kind in ("std", "variance") if rows[kind]["acceptable"]]
        lines.append(f"- Finding 3 (y_pred + noise), {precision} inversion: noise-free {noise_free:.1f} dB; the paper's "
                     f"noise read as a standard deviation (σ = {rows['std']['sigma']:g}) gives {rows['std']['psnr']:.1f} dB, "
                     f"read as a variance (σ = {rows['variance']['sigma']:g}) {rows['variance']['psnr']:.1f} dB. Within "
                     f"{tol:g} dB of noise-free counts as acceptable, so "
                     + (f"the {' and the '.join(ok)} reading reproduce{'s' if len(ok) == 1 else ''} the paper." if ok
                        else "neither reading reproduces the paper."))
    largest, d = results["largest_acceptable_sigma"], results["distance_y_pred_to_caption_rms"]
    lines.append(f"- The gap: inversion stays acceptable up to σ ≈ {largest['float64']:.0e} per coordinate (float64; "
                 f"{largest['float32']:.0e} in float32), while real captions are {d['one caption']:.1e} (one caption) and "
                 f"{d['mean caption']:.1e} (their mean) away from y_pred: "
                 f"{d['mean caption'] / max(largest['float64'], 1e-30):.1e}x further than the largest acceptable σ.")
    c, a = results["conditioning"], results["amplification"]
    worst = a["worst direction (1/σ_min of J_f)"]["median"]
    lines.append(f"- Why: the largest layer condition number is {c['max_condition_number']:.1e} and the Lipschitz bound "
                 f"of f⁻¹ is {c['inverse_lipschitz_bound']:.1e}; the measured median amplification is "
                 f"{a['random direction, tiny step']['median']:.1e} along random directions, "
                 f"{a['caption direction, tiny step']['median']:.1e} along the direction of the real caption "
                 f"({a['caption direction, full step']['median']:.1e} for the full step), and the local worst case "
                 f"(1/σ_min of the Jacobian) has median {worst:.1e}.")
    d_sqrt = math.sqrt(results["features"])
    ratio, single = a["random direction, tiny step"]["median"] / worst, 0.67 / d_sqrt
    lines.append(f"- Where it comes from: σ_min of {min(l['sigma_min'] for l in c['layers']):.0e} to "
                 f"{max(l['sigma_min'] for l in c['layers']):.0e} per W_i and the 1/slope of every LeakyReLU compound "
                 f"over {results['depth']} layers. A random unit perturbation is amplified by {ratio:.3f}x the worst-case "
                 f"gain; a single collapsed direction of J_f would give a median of 0.67/√d = {single:.3f}x, "
                 + ("so one or a few nearly collapsed directions, which every perturbation touches, do the damage."
                    if ratio < 3 / d_sqrt else "so many directions of J_f are nearly collapsed."))
    v, rho = results["volume"], results["caption_principal_axes"]["spearman_gain_vs_spread"]
    lines.append(f"- f shrinks volume by {v['scale_per_dim']:.3f} per coordinate (geometric mean), against "
                 f"{v['activation_floor_per_dim']:.3f} at most from the LeakyReLUs and {v['weights_scale_per_dim']:.1f} from "
                 f"the W_i (fixed diagonal). "
                 + (f"The gain along the captions' principal axes does not track their spread (rank correlation "
                    f"{rho:.1f}): the collapsed directions are not simply those in which captions do not vary."
                    if abs(rho) < 0.3 else
                    f"The gain along the captions' principal axes {'falls' if rho > 0 else 'grows'} as their spread "
                    f"shrinks (rank correlation {rho:.1f})."))
    return "\n".join(lines)


# --- figures ---------------------------------------------------------------------------------

def _show(ax, image: torch.Tensor) -> None:
    ax.set_xticks([]), ax.set_yticks([])
    image = image.detach().cpu()
    if bool(torch.isfinite(image).all()):
        ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    else:  # never drawn as if it were an image: a grey panel that says what happened
        ax.set_facecolor("0.85")
        ax.text(0.5, 0.5, "non-finite\npixels", ha="center", va="center", fontsize=7, color="darkred",
                transform=ax.transAxes)


def plot_image_rows(rows: dict[str, torch.Tensor], column_titles: Sequence[str] | None = None, wrap: int = 20):
    """A grid: one row per entry of ``rows`` (label -> (N, 3, H, W) images), one column per image,
    the column titles (e.g. the captions) wrapped in full above the first row. Non-finite images
    are drawn as labelled grey panels."""
    import matplotlib.pyplot as plt

    n = next(iter(rows.values())).shape[0]
    titles = ["\n".join(textwrap.wrap(t, wrap)) for t in column_titles] if column_titles is not None else None
    title_lines = max((t.count("\n") + 1 for t in titles), default=0) if titles else 0
    fig, axes = plt.subplots(len(rows), n, figsize=(1.45 * n + 1.0, 1.45 * len(rows) + 0.13 * title_lines + 0.3),
                             squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        if images.shape[0] != n:
            raise ValueError(f"row {label!r} has {images.shape[0]} images, expected {n}")
        for c in range(n):
            _show(axes[r, c], images[c])
        axes[r, 0].set_ylabel("\n".join(textwrap.wrap(label, 16)), fontsize=8)
    for c, title in enumerate(titles or []):
        axes[0, c].set_title(title, fontsize=6.5, loc="center")
    fig.tight_layout()
    return fig


def plot_noise_sweep(results: dict[str, Any]):
    """PSNR and SSIM against the ground truth of decoder(f^-1(y_pred + sigma * eps)) versus the
    noise std sigma (log axis), float32 and float64 inversion; the paper's two readings of its
    noise as labelled vertical lines; the band where real captions lie (RMS distance of y_pred to
    the mean caption .. to one caption) shaded; images generated from real captions as a star;
    decoder(z) as a dotted line."""
    import matplotlib.pyplot as plt

    sweeps, q = results["noise_sweep"], results["quality"]
    d = results["distance_y_pred_to_caption_rms"]
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.8))
    styles = {"float32": dict(color="tab:blue", marker="o", ms=4, lw=1.6, label="invert y_pred + σ·ε in float32"),
              "float64": dict(color="tab:red", marker="x", ms=6, lw=1.0, ls="--",
                              label="the same in float64 (equal to float32 where the noise dominates)")}
    for ax, key, unit in ((axes[0], "psnr", "PSNR against the true image (dB)"), (axes[1], "ssim", "SSIM against the true image")):
        ax.axvspan(d["mean caption"], d["one caption"], color="tab:green", alpha=0.15,
                   label="where real captions lie: RMS |y_pred − caption| (mean caption .. one caption)")
        for name, rows in sweeps.items():
            rows = [r for r in rows if r["sigma"] > 0]
            ax.plot([r["sigma"] for r in rows], [r[key] for r in rows], **styles[name])
        ax.axhline(q["autoencoder reconstruction"][key], color="gray", ls=":", lw=1.2,
                   label="autoencoder reconstruction decoder(z)")
        ax.plot([d["first caption"]], [q["generated from caption"][key]], "*", ms=13, color="tab:green",
                markeredgecolor="black", label="generated from the real first caption")
        for kind, row in results["paper_noise"]["float64"].items():
            ax.axvline(row["sigma"], color="black", lw=0.9, ls="-.")
            ax.text(row["sigma"], 0.55, f"paper σ: 1e-4 as {kind} ", fontsize=7, rotation=90, ha="right", va="center",
                    transform=ax.get_xaxis_transform())
        ax.set_xscale("log")
        ax.set_xlabel("σ: std of the Gaussian noise added to y_pred = f(z), per coordinate (embedding units)")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def plot_amplification(results: dict[str, Any], arrays: dict[str, Any]):
    """Left: sigma_min and sigma_max of every W_i (log axis). Middle: histograms of the measured
    amplification of f^-1 per kind of perturbation, with its Lipschitz bound. Right: the median
    gain along each principal axis of the caption embeddings beside the captions' spread there.
    Legends sit below the panels, never on the data."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    layers = results["conditioning"]["layers"]
    index = [layer["index"] + 1 for layer in layers]
    axes[0].semilogy(index, [layer["sigma_max"] for layer in layers], "o-", label="σ_max(W_i)")
    axes[0].semilogy(index, [layer["sigma_min"] for layer in layers], "s-", label="σ_min(W_i)")
    for i, layer in zip(index, layers):
        axes[0].annotate(f"κ={layer['condition_number']:.0f}", (i, layer["sigma_min"]), textcoords="offset points",
                         xytext=(0, -12), ha="center", fontsize=7)
    axes[0].set_xlabel("layer i")
    axes[0].set_ylabel("singular value of W_i")
    axes[0].set_xticks(index)
    axes[0].margins(y=0.25)
    bound = results["conditioning"]["inverse_lipschitz_bound"]
    logs = {label: torch.log10(v.double()).numpy() for label, v in arrays["ratios"].items()}
    low = min(float(v.min()) for v in logs.values())
    high = max(max(float(v.max()) for v in logs.values()), math.log10(bound))
    bins = np.linspace(low - 0.1, high + 0.1, 60)
    for label, v in logs.items():
        axes[1].hist(v, bins=bins, alpha=0.55, label=label, density=True)
    axes[1].axvline(math.log10(bound), color="black", ls="--", label="Lipschitz bound of f⁻¹")
    axes[1].set_xlabel("log10 amplification ||Δx|| / ||Δy|| (dimensionless)")
    axes[1].set_ylabel("share of test points (density)")
    gains, spread = arrays["gains"], arrays["spread"]
    k = torch.arange(1, gains.shape[0] + 1)
    axes[2].semilogy(k, gains, ".", ms=3, color="tab:red", label="median gain of f⁻¹ along the axis (left axis)")
    axes[2].set_xlabel("principal axis of the caption embeddings (by decreasing spread)")
    axes[2].set_ylabel("amplification ||Δx|| / ||Δy||", color="tab:red")
    twin = axes[2].twinx()
    twin.semilogy(k, spread.clamp_min(1e-20), "-", color="tab:blue", lw=1.2, label="std of the captions along it (right axis)")
    twin.set_ylabel("std of caption embeddings along the axis (embedding units)", color="tab:blue")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    for ax, extra in ((axes[0], None), (axes[1], None), (axes[2], twin)):
        handles, labels = ax.get_legend_handles_labels()
        if extra is not None:
            more = extra.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    return fig


# --- README ----------------------------------------------------------------------------------

def finding_rows(r: dict[str, Any]) -> list[str]:
    """Markdown table rows (claim | this run | verdict) for the paper's findings 2 and 3."""
    q, judge, largest = r["quality"], r["attribute_judge"], r["largest_acceptable_sigma"]
    p32, p64 = r["paper_noise"]["float32"], r["paper_noise"]["float64"]
    gen = q["generated from caption"]
    judged = ""
    if judge is not None:
        acc, chance = judge["accuracy_percent"]["generated from caption"], judge["chance_percent"]
        keys = [k for k in chance if k != "all"]
        judged = (f"; a nearest-neighbour judge reads {'/'.join(keys)} back at "
                  f"{'/'.join(f'{acc[k]:.0f}' for k in keys)} % (chance {'/'.join(f'{chance[k]:.0f}' for k in keys)} %)")
    any_ok = any(row["acceptable"] for rows in (p32, p64) for row in rows.values())
    return [
        f"| (2) decoder(f⁻¹(E_T(T))) does not meet expectations | images from test captions: {gen['psnr']:.1f} dB PSNR, "
        f"SSIM {gen['ssim']:.2f} against their images (autoencoder alone: {q['autoencoder reconstruction']['psnr']:.1f} dB / "
        f"{q['autoencoder reconstruction']['ssim']:.2f}){judged} | "
        f"{'**confirmed**' if gen['psnr'] < q['autoencoder reconstruction']['psnr'] - 15 else 'not confirmed'} |",
        f"| (3) f⁻¹(y_pred + N(0, 1e-4)) gives the input back at acceptable quality | float64: {p64['std']['psnr']:.1f} dB "
        f"with σ = {p64['std']['sigma']:g} (1e-4 as std), {p64['variance']['psnr']:.1f} dB with σ = "
        f"{p64['variance']['sigma']:g} (as variance), noise-free {r['noise_sweep']['float64'][0]['psnr']:.1f} dB; float32: "
        f"{p32['std']['psnr']:.1f} / {p32['variance']['psnr']:.1f} dB (noise-free {r['noise_sweep']['float32'][0]['psnr']:.1f}); "
        f"acceptable (within {r['acceptable_db']:g} dB) only up to σ ≈ {largest['float64']:.0e} (float64), "
        f"{largest['float32']:.0e} (float32) | {'reproduced' if any_ok else '**not reproduced** with either reading'} |"]


def glance_rows(folder: Path) -> list[str]:
    """The README overview's rows (``invcap.studies.overview``): findings 2 and 3."""
    return finding_rows(load_results(folder))


def render_readme(folder: Path) -> str:
    r = load_results(folder)
    d, c, a = r["distance_y_pred_to_caption_rms"], r["conditioning"], r["amplification"]
    largest = r["largest_acceptable_sigma"]
    rows = ["| paper finding (section 3.2) | this run | verdict |", "|---|---|---|", *finding_rows(r)]
    why = (f"Real captions lie {d['mean caption']:.1e} (their mean) to {d['one caption']:.1e} (one caption) RMS per "
           f"coordinate from y_pred, {d['mean caption'] / max(largest['float64'], 1e-30):.0e}x beyond the largest acceptable σ. "
           f"Layer condition numbers reach {c['max_condition_number']:.1e}; the Lipschitz bound of f⁻¹ is "
           f"{c['inverse_lipschitz_bound']:.1e}; measured median amplification: "
           + ", ".join(f"{name} {v['median']:.1e}" for name, v in a.items())
           + f". f shrinks volume by {r['volume']['scale_per_dim']:.3f} per coordinate (LeakyReLU floor "
           f"{r['volume']['activation_floor_per_dim']:.3f}).")
    t = r["run"]["timings"]
    run_time = "Run time: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) + f" ({nb02_autoencoder.threads_text(r)})."
    return "\n".join(rows) + "\n\n" + why + " " + run_time


README_BLOCKS = {"nb04-inversion": render_readme}

KEY_NUMBERS = {
    "nb04 PSNR of images from captions (dB)": lambda folder: load_results(folder)["quality"]["generated from caption"]["psnr"],
    "nb04 PSNR of the float32 round trip (dB)": lambda folder: load_results(folder)["quality"]["inverted y_pred"]["psnr"],
    "nb04 log10 median amplification, random direction":
        lambda folder: math.log10(load_results(folder)["amplification"]["random direction, tiny step"]["median"]),
    "nb04 log10 Lipschitz bound of f^-1":
        lambda folder: math.log10(load_results(folder)["conditioning"]["inverse_lipschitz_bound"]),
}

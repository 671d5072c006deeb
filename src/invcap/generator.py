"""Text -> image in one file: the ``TextToImage`` bundle behind ``python -m invcap generate``.

A bundle holds a trained method (``invcap.methods.TrainedMethod``), the autoencoder's decoder
weights and configuration and the sentence model's name, so generating needs nothing else.
``save_generator`` writes it atomically; ``TextToImage.load`` reads it back.

``build_generator`` trains only what a generator needs, in a few minutes on 2 CPU cores: the
embedded dataset, notebook 02's autoencoder, the train split's caption embeddings and one
method (by default the one notebook 05 selected on validation, read from its results file;
``DEFAULT_GENERATOR`` when there is none). Everything goes through the same caches as the
notebooks, so a later ``make paper`` reuses it. ``make generator`` runs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from invcap.io import cache_dir, save_torch_atomic
from invcap.methods import TrainedMethod

__all__ = ["GENERATOR_FORMAT", "DEFAULT_GENERATOR", "DEFAULT_STEPS", "default_generator_path", "save_generator",
           "TextToImage", "autoencoder_parts", "selected_generator", "build_generator"]

GENERATOR_FORMAT = 2
# Used when no notebook-05 selection exists yet (its results file names the method chosen on
# validation and the steps; this is the method the last committed selection chose).
DEFAULT_GENERATOR = "bidirectional+projected128+contrastive+shallow"
DEFAULT_STEPS = 3000
HOW_TO_MAKE = "run `make generator` (trains only the generator and what it needs, a few minutes on 2 cores)"


def default_generator_path() -> Path:
    """Where ``make generator`` (and notebook 05's final table) saves the generator."""
    return cache_dir() / "generator" / "best.pt"


def save_generator(path: str | Path, trained: TrainedMethod, autoencoder: torch.nn.Module,
                   autoencoder_config: Mapping[str, Any], sentence_model: str,
                   info: Mapping[str, Any] | None = None) -> Path:
    """One self-contained file: the trained method, the decoder's weights and configuration
    (``AutoencoderConfig`` fields) and the sentence model's name; written atomically."""
    bundle = {"format": GENERATOR_FORMAT, "method": trained.state(),
              "autoencoder": {k: v.detach().cpu() for k, v in autoencoder.state_dict().items()},
              "autoencoder_config": {k: list(v) if isinstance(v, tuple) else v for k, v in autoencoder_config.items()},
              "sentence_model": sentence_model, "info": dict(info or {})}
    return save_torch_atomic(bundle, path)


@dataclass
class TextToImage:
    """caption -> sentence embedding -> f^-1 -> decoder, from a ``save_generator`` file."""

    trained: TrainedMethod
    autoencoder: torch.nn.Module
    sentence_model: str
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "TextToImage":
        from invcap.autoencoder import AutoencoderConfig

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no generator at {path}; {HOW_TO_MAKE}, or pass --checkpoint PATH")
        try:
            bundle = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file
            raise ValueError(f"cannot read generator {path} ({type(error).__name__}: {error}); delete it and "
                             f"{HOW_TO_MAKE}") from error
        if not isinstance(bundle, dict) or bundle.get("format") != GENERATOR_FORMAT:
            raise ValueError(f"{path} is not an invcap generator of format {GENERATOR_FORMAT}; delete it and "
                             f"{HOW_TO_MAKE}")
        config = dict(bundle["autoencoder_config"])
        config["widths"] = tuple(config["widths"])
        autoencoder = AutoencoderConfig(**config).model()
        autoencoder.load_state_dict(bundle["autoencoder"])
        return cls(TrainedMethod.from_state(bundle["method"]), autoencoder.eval(), bundle["sentence_model"],
                   dict(bundle.get("info", {})))

    @torch.no_grad()
    def generate(self, captions: Sequence[str], samples: int = 1, seed: int = 0, encoder=None) -> torch.Tensor:
        """Images (N, samples, 3, H, W) in [0, 1] for N captions. ``encoder``: a
        ``SentenceEncoder`` of ``self.sentence_model`` (one is made when None)."""
        from invcap.inversion import check_captions, check_images

        captions = check_captions(captions)
        if encoder is None:
            from invcap.text import SentenceEncoder

            encoder = SentenceEncoder(self.sentence_model, device="cpu", cache=False)
        embeddings = encoder.encode(captions, progress=False)
        latents = self.trained.invert(embeddings, samples=samples, seed=seed)
        images = self.autoencoder.decode(latents.reshape(-1, latents.shape[-1]))
        images = check_images(images, "generated images").clamp(0, 1)
        return images.reshape(len(captions), samples, *images.shape[1:])


def autoencoder_parts(features) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """(autoencoder, its ``AutoencoderConfig`` fields, sentence model name) of a ``Features``
    record (``invcap.features.load_features``): what ``save_generator`` needs beside the method."""
    meta_path = Path(features.info["autoencoder_checkpoint"]).with_suffix(".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"the autoencoder's metadata {meta_path} is missing; rerun notebook 02 or "
                                f"`make generator`")
    config = json.loads(meta_path.read_text())["config"]
    return features.autoencoder, config, features.info["model"]


def selected_generator(results: Path | None = None) -> dict[str, Any]:
    """The method and training settings to build, chosen on validation: the final table's
    (``final_table.json``: notebook 05's method at the steps chosen on validation) when it exists,
    else notebook 05's (``closing_the_gap.json``), else the defaults. Both files have a
    ``"generator"`` entry: {method, steps, lr, seed} and, from the final table, the term ``weights``
    chosen on validation."""
    from invcap.io import results_dir

    folder = results or results_dir()
    for name in ("final_table.json", "closing_the_gap.json"):
        path = folder / name
        chosen = json.loads(path.read_text()).get("generator") if path.is_file() else None
        if chosen:
            return {"method": chosen["method"], "steps": int(chosen["steps"]), "lr": float(chosen["lr"]),
                    "seed": int(chosen.get("seed", 0)), "weights": chosen.get("weights"), "source": str(path)}
    return {"method": DEFAULT_GENERATOR, "steps": DEFAULT_STEPS, "lr": 3e-3, "seed": 0, "weights": None,
            "source": "invcap.generator.DEFAULT_GENERATOR (no notebook-05 selection found)"}


def build_generator(path: Path | None = None, method: str | None = None, steps: int | None = None,
                    device: str = "cpu", progress: bool = True) -> Path:
    """Train (or load from the caches) the embedded data, the autoencoder, the train split's
    features and one method, and save the bundle to ``path`` (default ``default_generator_path()``)."""
    from invcap.features import load_features
    from invcap.methods import method as registered
    from invcap.methods import train_method
    from invcap.repro import seed_everything

    chosen = selected_generator()
    if method is not None:
        chosen.update(method=method, source="--method")
    if steps is not None:
        chosen["steps"] = int(steps)
    if method is not None:
        chosen["weights"] = None   # another method: its own registered weights
    spec = registered(chosen["method"]).reweighted(chosen.get("weights"))   # an unknown name fails now
    seed_everything(chosen["seed"])
    train = load_features("train", device=device, progress=progress)
    trained = train_method(spec, train.latents, train.caption_embeddings, progress=progress,
                           steps=chosen["steps"], lr=chosen["lr"], seed=chosen["seed"], device=device)
    return save_generator(path or default_generator_path(), trained, *autoencoder_parts(train), info=chosen)

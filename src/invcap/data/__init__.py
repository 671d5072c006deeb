"""Captioned-image data: the embedded procedural default and Flickr30k, behind one loader.

- ``invcap.data.embedded``: the generator (``ATTRIBUTES``, ``render``, ``describe``, splits,
  ``make_embedded_dataset`` which writes Flickr30k's layout, ``evaluation_captions``).
- ``invcap.data.wording``: the training wording (sentence shapes, synonyms, partial captions).
- ``invcap.data.heldout_wording``: a disjoint wording used only to test (never imported here).
- ``load_flickr30k(root, split=None, image_size=32)``: reads whichever Flickr30k annotation file is
  under ``root`` and returns a ``CaptionedImages`` dataset of ``(image, captions)``.
- ``embedded_dataset(split=None, image_size=32, seed=0)``: make (cached) + load.
- ``invcap.data.images``: checking image files, decoding them once into uint8, the float view.
- ``invcap.data.rehearsal``: a Flickr30k-shaped rehearsal set (``python -m invcap.data.rehearsal OUT``).

The names below are imported on first use, so that ``python -m invcap.data.rehearsal`` and its
worker processes start without importing torch.
"""

from importlib import import_module

_SOURCES = {
    "ATTRIBUTES": "embedded", "COMPOSITIONAL_SPLITS": "embedded", "render": "embedded",
    "render_batch": "embedded", "describe": "embedded", "evaluation_captions": "embedded",
    "all_combinations": "embedded", "compositional_holdout": "embedded", "make_embedded_dataset": "embedded",
    "Caption": "wording", "CaptionedImages": "flickr30k", "load_flickr30k": "flickr30k",
    "embedded_dataset": "flickr30k",
}

__all__ = list(_SOURCES)


def __getattr__(name: str):
    if name in _SOURCES:
        return getattr(import_module(f"invcap.data.{_SOURCES[name]}"), name)
    raise AttributeError(f"module 'invcap.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

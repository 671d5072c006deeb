"""Captioned-image data: the embedded procedural default and Flickr30k, behind one loader.

- ``invcap.data.embedded``: the generator (``ATTRIBUTES``, ``render``, ``describe``, splits,
  ``make_embedded_dataset`` which writes Flickr30k's layout).
- ``load_flickr30k(root, split=None, image_size=32)``: reads whichever Flickr30k annotation file is
  under ``root`` and returns a ``CaptionedImages`` dataset of ``(image, captions)``.
- ``embedded_dataset(split=None, image_size=32, seed=0)``: make (cached) + load.
"""

from invcap.data.embedded import (ATTRIBUTES, all_combinations, compositional_holdout, describe,
                                  make_embedded_dataset, render, render_batch)
from invcap.data.flickr30k import CaptionedImages, embedded_dataset, load_flickr30k

__all__ = ["ATTRIBUTES", "render", "render_batch", "describe", "all_combinations",
           "compositional_holdout", "make_embedded_dataset", "CaptionedImages", "load_flickr30k",
           "embedded_dataset"]

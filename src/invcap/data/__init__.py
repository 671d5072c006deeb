"""Captioned-image data: the embedded procedural default and Flickr30k, behind one loader.

- ``invcap.data.embedded``: the generator (``ATTRIBUTES``, ``render``, ``describe``, splits,
  ``make_embedded_dataset`` which writes Flickr30k's layout, ``evaluation_captions``).
- ``invcap.data.wording``: the training wording (sentence shapes, synonyms, partial captions).
- ``invcap.data.heldout_wording``: a disjoint wording used only to test (never imported here).
- ``load_flickr30k(root, split=None, image_size=32)``: reads whichever Flickr30k annotation file is
  under ``root`` and returns a ``CaptionedImages`` dataset of ``(image, captions)``.
- ``embedded_dataset(split=None, image_size=32, seed=0)``: make (cached) + load.
"""

from invcap.data.embedded import (ATTRIBUTES, COMPOSITIONAL_SPLITS, all_combinations, compositional_holdout,
                                  describe, evaluation_captions, make_embedded_dataset, render, render_batch)
from invcap.data.flickr30k import CaptionedImages, embedded_dataset, load_flickr30k
from invcap.data.wording import Caption

__all__ = ["ATTRIBUTES", "COMPOSITIONAL_SPLITS", "render", "render_batch", "describe", "evaluation_captions",
           "all_combinations", "compositional_holdout", "make_embedded_dataset", "Caption", "CaptionedImages",
           "load_flickr30k", "embedded_dataset"]

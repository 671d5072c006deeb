"""A held-out wording for testing only: sentence shapes and phrases that the dataset never uses.

Nothing that builds the dataset or trains a model imports this module (``tests/test_wording.py``
checks); only evaluation does, through ``invcap.data.embedded.evaluation_captions(..., wording="heldout")``.
Captions are drawn exactly as the training ones (``invcap.data.wording.Wording``: same template syntax,
same typing noise), so the only difference is the words and the sentence shapes.

What "disjoint from the training wording" means here (``tests/test_wording.py`` proves each point):
1. No shared sentence shape. For every template of each wording and every set of attributes it can
   state, take its skeleton (``wording.skeleton``: slots as ``<attribute>``, articles removed, lower
   case, British spelling, hyphens and punctuation as spaces). No held-out skeleton equals a training
   skeleton.
2. No shared phrase. For every attribute value, the held-out phrases and the training phrases share
   no phrase after ``wording.normalise`` (so "top-left", "Top left" and "top left" are one phrase, and
   "colour"/"color" one spelling). The nouns that stand in for an unstated shape are disjoint too.
3. No bare value name. The dataset's own value names ("circle", "red", "small", "top left", ...) are
   training phrases, and no held-out phrase even contains one as a run of whole words, so a held-out
   caption never says "red" or "circle" (it says "scarlet", "orb"). Single other words may be shared
   ("upper" in "upper left-hand" and the training "upper left"); whole phrases may not.
Every held-out template puts a noun after the position ("... corner", "... part"), since its position
phrases ("upper left-hand", "northwest") need one. The words are ones a person types: less common synonyms and other sentence shapes (requests,
first-person descriptions, form-like specs), not invented ones.
"""

from __future__ import annotations

from invcap.data.wording import Wording

__all__ = ["HELDOUT"]

_HELDOUT_SYNONYMS = {
    "shape": {"circle": ("orb", "spot", "round blob"),
              "square": ("tile", "four-sided shape", "boxy shape"),
              "triangle": ("pyramid", "three-cornered shape", "triangular form"),
              "cross": ("plus symbol", "plus mark", "addition sign")},
    "colour": {"red": ("scarlet", "crimson", "cherry-coloured"), "green": ("emerald", "lime", "grass-coloured"),
               "blue": ("cobalt", "azure", "sapphire"), "yellow": ("golden", "lemon", "canary")},
    "size": {"small": ("teeny", "miniature", "wee"),
             "medium": ("middle-sized", "normal-sized", "regular-sized"),
             "large": ("giant", "enormous", "massive")},
    "position": {"top left": ("upper left-hand", "northwest"), "top right": ("upper right-hand", "northeast"),
                 "bottom left": ("lower left-hand", "southwest"), "bottom right": ("lower right-hand", "southeast")},
}

_HELDOUT_TEMPLATES = (
    "i drew {a}[ {size}][ {colour}] {shape}[ in {the} {position} corner]",
    "can you draw {a}[ {size}][ {colour}] {shape}[ in {the} {position} corner]",
    "draw me {a}[ {size}][ {colour}] {shape}[ toward {the} {position} corner]",
    "please make {a}[ {colour}] {shape}[, {size},][ over in {the} {position} corner]",
    "my picture has {a}[ {colour}][ {size}] {shape}[ over in {the} {position} part]",
    "look, {a}[ {size}] {shape}[, kind of {colour},][ hanging out in {the} {position} corner]",
    "[{position} corner, ]one lonely[ {size}] {shape}[ painted {colour}]",
    "it's {a}[ {size}][ {colour}] {shape}[, {position} corner]",
    "i want {a}[ {colour}] {shape}[ that is {size}][ in {the} {position} corner]",
    "shape: {shape}[, colour: {colour}][, size: {size}][, location: {position} corner]",
    "picture with {a} single[ {size}][ {colour}] {shape}[ up toward {the} {position} region]",
    "{a} {shape}, which is {colour} and {size}[, sits in {the} {position} corner]",
    "somewhere in {the} {position} corner there's {a}[ {size}][ {colour}] {shape}",
    "[way over in {the} {position} corner, ]you'll find {a}[ {size}][ {colour}] {shape}",
    "{a}[ {size}][ {colour}] {shape} all alone[ in {the} {position} corner]",
    "a black canvas with {a}[ {size}][ {colour}] {shape}[ in its {position} corner]",
    "should be {a}[ {size}][ {colour}] {shape}[ in {the} {position} quarter]",
    "nothing but {a}[ {size}][ {colour}] {shape}[ in {the} {position} part]",
)

HELDOUT = Wording("heldout", _HELDOUT_TEMPLATES, _HELDOUT_SYNONYMS, generic_shapes=("item", "form", "figure"))

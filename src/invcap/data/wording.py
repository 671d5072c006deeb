"""How the embedded dataset's captions are worded: sentence shapes, synonyms, and the noise of typing.

A ``Wording`` is a set of sentence templates and, per attribute value, the phrases that may name it.
``TRAINING`` is the only wording the dataset's captions use; a separate, disjoint wording for testing
lives in ``invcap.data.heldout_wording`` and is never imported here.

Template syntax (one template = one sentence shape):
- ``{shape}``, ``{colour}``, ``{size}``, ``{position}``: the attribute slots;
- ``{a}`` / ``{the}``: an indefinite ("a"/"an", agreeing with the next word) / definite article, both
  left out in terse captions;
- ``[ ... ]``: an optional segment holding exactly one slot, dropped when the caption leaves that
  attribute out. A slot outside brackets is always stated, except ``{shape}``: a caption that leaves the
  shape out names a generic noun instead ("a small red object ...").
A template that lacks a slot entirely only produces captions that leave that attribute out.

Each caption is drawn as a person might type it: a template, one phrase per stated attribute, then
the style of one writer: articles kept or dropped, British or American spelling (colour/color),
hyphens or spaces (top-left/top left), a final full stop, exclamation mark or nothing, and lower case,
sentence case, title case or capitals. ``parse`` reads a caption back to the attributes it states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping, Sequence

import numpy as np

__all__ = ["Caption", "Wording", "TRAINING", "PARTIAL_RATE", "OMITTED_COUNT_P", "normalise",
           "template_slots", "skeleton"]

ATTRIBUTE_NAMES = ("shape", "colour", "size", "position")  # == embedded.ATTRIBUTES' keys (tested)

# Share of the dataset's captions that leave attributes out (Flickr captions rarely state everything),
# and how many they leave out (1, 2 or 3 of 4; the omitted set is uniform among sets of that size).
PARTIAL_RATE = 0.3
OMITTED_COUNT_P = {1: 0.6, 2: 0.3, 3: 0.1}

# One writer's style, drawn per caption.
_STYLE = {"terse": 0.2,        # drop every article
          "american": 0.5,     # color, colored, gray, center
          "unhyphenated": 0.3}  # top left, medium sized
_ENDINGS = ((".", 0.5), ("", 0.45), ("!", 0.05))
_CASES = (("sentence", 0.5), ("lower", 0.4), ("title", 0.05), ("upper", 0.05))
_AMERICAN = (("colour", "color"), ("grey", "gray"), ("centre", "center"))

_SLOT = re.compile(r"\{(shape|colour|size|position|a|the)\}")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


@dataclass(frozen=True)
class Caption:
    """One caption: its ``text``, the attributes it states (``mentions``, in ``ATTRIBUTE_NAMES``
    order) and the index of its template in the wording that wrote it."""

    text: str
    mentions: tuple[str, ...]
    template: int

    @property
    def omitted(self) -> tuple[str, ...]:
        return tuple(a for a in ATTRIBUTE_NAMES if a not in self.mentions)

    @property
    def full(self) -> bool:
        return len(self.mentions) == len(ATTRIBUTE_NAMES)


def normalise(text: str) -> str:
    """Lower case, British spelling, hyphens and punctuation as spaces, single spaces: the form in
    which two phrases (or two sentence shapes) count as the same."""
    text = text.lower()
    for british, american in _AMERICAN:
        text = re.sub(rf"\b{american}", british, text)
    text = re.sub(r"[^\w<>\s]", " ", text.replace("'", ""))
    return " ".join(text.split())


def template_slots(template: str) -> tuple[set[str], set[str]]:
    """(attributes the template names, attributes it can leave out). Shape can always be left out."""
    named = {m for m in _SLOT.findall(template) if m in ATTRIBUTE_NAMES}
    optional = set()
    for segment in _SEGMENT.findall(template):
        inside = [m for m in _SLOT.findall(segment) if m in ATTRIBUTE_NAMES]
        if len(inside) != 1:
            raise ValueError(f"template {template!r}: segment [{segment}] must hold exactly one attribute slot")
        optional.add(inside[0])
    return named, optional | ({"shape"} & named)


def _supports(template: str, mentions: set[str]) -> bool:
    named, optional = template_slots(template)
    return "shape" in named and mentions <= named and (named - optional) <= mentions


def skeleton(template: str, mentions: Sequence[str]) -> str:
    """The sentence shape of ``template`` stating ``mentions``: dropped segments removed, slots as
    ``<attribute>``, articles removed, ``normalise``d. Two templates are the same sentence shape
    when some choice of mentions gives both the same skeleton."""
    keep = set(mentions)

    def segment(match: re.Match) -> str:
        slot = next(m for m in _SLOT.findall(match.group(1)) if m in ATTRIBUTE_NAMES)
        return match.group(1) if slot in keep or slot == "shape" else ""

    text = _SEGMENT.sub(segment, template)
    text = _SLOT.sub(lambda m: "" if m.group(1) in ("a", "the") else f"<{m.group(1)}>", text)
    return normalise(text)


def _tidy(text: str) -> str:
    """Repairs what dropped segments leave: doubled spaces, stray commas and colons."""
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.:;)])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"([,:;])(\s*[,:;])+", r"\1", text)
    text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)  # a -> an before a vowel
    return text.strip(" ,:;")


def _pick(rng: np.random.Generator, options: Sequence):
    """One of ``options``, uniformly (``rng.choice`` is ~20x slower on short tuples)."""
    return options[min(int(rng.random() * len(options)), len(options) - 1)]


def _draw(rng: np.random.Generator, options: Sequence[tuple[str, float]]) -> str:
    """One name of ``(name, probability)`` options."""
    u, total = rng.random() * sum(p for _, p in options), 0.0
    for name, p in options:
        total += p
        if u < total:
            return name
    return options[-1][0]


@dataclass(frozen=True)
class Wording:
    """Sentence templates plus, per attribute and value, the phrases that name it (``synonyms``), and
    the nouns that stand in for an unstated shape (``generic_shapes``)."""

    name: str
    templates: tuple[str, ...]
    synonyms: Mapping[str, Mapping[str, tuple[str, ...]]] = field(repr=False)
    generic_shapes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if set(self.synonyms) != set(ATTRIBUTE_NAMES):
            raise ValueError(f"{self.name}: synonyms must cover {ATTRIBUTE_NAMES}, got {sorted(self.synonyms)}")
        for template in self.templates:
            named, _ = template_slots(template)
            if "shape" not in named:
                raise ValueError(f"{self.name}: template {template!r} has no {{shape}} slot")
        if not self.full_templates:
            raise ValueError(f"{self.name}: no template states all four attributes")

    @cached_property
    def full_templates(self) -> tuple[int, ...]:
        """Indices of the templates that can state every attribute."""
        return tuple(i for i, t in enumerate(self.templates) if _supports(t, set(ATTRIBUTE_NAMES)))

    def templates_for(self, mentions: Sequence[str]) -> tuple[int, ...]:
        """Indices of the templates that can state exactly ``mentions``."""
        key = frozenset(mentions)
        if key not in self._memo:  # the dataset asks ~30k times for 15 different sets
            self._memo[key] = tuple(i for i, t in enumerate(self.templates) if _supports(t, set(key)))
        return self._memo[key]

    @cached_property
    def _memo(self) -> dict[frozenset, tuple[int, ...]]:
        return {}

    def caption(self, attributes: Mapping[str, str], rng: np.random.Generator, omit: Sequence[str] = (),
                exclude: Sequence[int] = ()) -> Caption:
        """One caption of ``attributes`` that leaves out ``omit`` (a subset of the attribute names,
        not all of them), from a template not in ``exclude`` (when another one fits)."""
        unknown = set(omit) - set(ATTRIBUTE_NAMES)
        if unknown or len(set(omit)) == len(ATTRIBUTE_NAMES):
            raise ValueError(f"omit must be a proper subset of {ATTRIBUTE_NAMES}, got {tuple(omit)}")
        mentions = tuple(a for a in ATTRIBUTE_NAMES if a not in omit)
        candidates = self.templates_for(mentions)
        fresh = [i for i in candidates if i not in set(exclude)]
        index = _pick(rng, fresh or candidates)
        words = {a: _pick(rng, self.synonyms[a][attributes[a]]) for a in mentions}
        if "shape" in omit:
            words["shape"] = _pick(rng, self.generic_shapes)
        return Caption(self._fill(self.templates[index], words, rng), mentions, index)

    def captions(self, attributes: Mapping[str, str], rng: np.random.Generator, n: int = 5,
                 partial_rate: float = 0.0) -> list[Caption]:
        """``n`` captions in different templates; each leaves attributes out with probability
        ``partial_rate`` (``OMITTED_COUNT_P`` decides how many), but at least one states everything."""
        partial = [rng.random() < partial_rate for _ in range(n)]
        if all(partial):
            partial[_pick(rng, range(n))] = False
        out: list[Caption] = []
        for is_partial in partial:
            omit = self.draw_omission(rng) if is_partial else ()
            out.append(self.caption(attributes, rng, omit, exclude=[c.template for c in out]))
        return out

    @staticmethod
    def draw_omission(rng: np.random.Generator) -> tuple[str, ...]:
        """A random set of attributes to leave out (``OMITTED_COUNT_P``)."""
        count = int(_draw(rng, [(str(k), p) for k, p in OMITTED_COUNT_P.items()]))
        chosen = set(rng.permutation(len(ATTRIBUTE_NAMES))[:count].tolist())
        return tuple(a for i, a in enumerate(ATTRIBUTE_NAMES) if i in chosen)

    def _fill(self, template: str, words: Mapping[str, str], rng: np.random.Generator) -> str:
        terse, american, unhyphenated = (rng.random() < _STYLE[k] for k in ("terse", "american", "unhyphenated"))

        def segment(match: re.Match) -> str:
            slot = next(m for m in _SLOT.findall(match.group(1)) if m in ATTRIBUTE_NAMES)
            return match.group(1) if slot in words else ""

        text = _SEGMENT.sub(segment, template)
        articles = {"a": "" if terse else "a", "the": "" if terse else "the"}
        text = _SLOT.sub(lambda m: articles.get(m.group(1), words.get(m.group(1), "")), text)
        if american:
            for british, us in _AMERICAN:
                text = text.replace(british, us)
        if unhyphenated:
            text = re.sub(r"(?<=\w)-(?=\w)", " ", text)
        text = _tidy(text) + _draw(rng, _ENDINGS)
        case = _draw(rng, _CASES)
        if case == "sentence":
            return text[:1].upper() + text[1:]
        if case == "title":
            return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))
        return text.upper() if case == "upper" else text

    @cached_property
    def _patterns(self) -> dict[str, list[tuple[re.Pattern, str]]]:
        out = {}
        for attribute, values in self.synonyms.items():
            phrases = sorted(((normalise(p), v) for v, ps in values.items() for p in ps), key=lambda pv: -len(pv[0]))
            out[attribute] = [(re.compile(rf"(?<!\w){re.escape(p)}(?!\w)"), v) for p, v in phrases]
        return out

    def parse(self, text: str) -> dict[str, str]:
        """The attributes a caption in this wording states: attribute -> value. Phrases are matched
        longest first on whole words; an attribute named with two different values is an error."""
        norm = normalise(text)
        found: dict[str, str] = {}
        for attribute, patterns in self._patterns.items():
            rest = norm
            for pattern, value in patterns:
                if pattern.search(rest):
                    if found.get(attribute, value) != value:
                        raise ValueError(f"{text!r} names {attribute} both {found[attribute]!r} and {value!r}")
                    found[attribute] = value
                    rest = pattern.sub(" # ", rest)
        return {a: found[a] for a in ATTRIBUTE_NAMES if a in found}


# --- the training wording ------------------------------------------------------------------------
# Everyday words first (what a person reaches for), then the more descriptive ones.
_TRAINING_SYNONYMS = {
    "shape": {"circle": ("circle", "disc", "disk", "dot", "ball", "round dot", "circular shape"),
              "square": ("square", "box", "block", "square block", "box shape", "square shape"),
              "triangle": ("triangle", "triangular shape", "three-sided shape", "triangular block"),
              "cross": ("cross", "plus", "plus sign", "cross shape", "plus shape")},
    "colour": {"red": ("red", "bright red", "reddish"), "green": ("green", "bright green", "greenish"),
               "blue": ("blue", "bright blue", "bluish"), "yellow": ("yellow", "bright yellow", "yellowish")},
    "size": {"small": ("small", "tiny", "little", "smallish"),
             "medium": ("medium", "medium-sized", "mid-sized", "average-sized"),
             "large": ("large", "big", "huge", "largish")},
    "position": {"top left": ("top left", "top-left", "upper left"),
                 "top right": ("top right", "top-right", "upper right"),
                 "bottom left": ("bottom left", "bottom-left", "lower left"),
                 "bottom right": ("bottom right", "bottom-right", "lower right")},
}

_TRAINING_TEMPLATES = (
    # adjectives before the noun, position after
    "{a}[ {size}][ {colour}] {shape}[ in {the} {position} corner]",
    "there is {a}[ {size}][ {colour}] {shape}[ at {the} {position}]",
    "there's {a}[ {size}][ {colour}] {shape}[ in {the} {position} of the image]",
    "the picture shows {a}[ {size}] {shape}[ coloured {colour}][ near {the} {position} corner]",
    "one[ {size}][ {colour}] {shape} is drawn[ in {the} {position} area]",
    "image of {a}[ {size}][ {colour}] {shape}[ in {the} {position}]",
    "this is {a}[ {size}][ {colour}] {shape}[ located {position}]",
    "we see {a}[ {size}][ {colour}] {shape}[ in {the} {position}]",
    "you can see {a}[ {colour}][ {size}] {shape}[ in {the} {position} corner]",
    "{a}[ {size}][ {colour}] {shape}[ towards {the} {position}]",
    "{a}[ {size}][ {colour}] {shape}[ sitting in {the} {position} corner]",
    "just {a}[ {size}][ {colour}] {shape}[, {position}]",
    "{a}[ {size}][ {colour}] {shape} by itself[ in {the} {position}]",
    "{a}[ {size}][ {colour}] {shape} against a dark background[, {position}]",
    "dark background with {a}[ {size}][ {colour}] {shape}[ in {the} {position} corner]",
    "a dark image with {a}[ {colour}][ {size}] {shape}[ at {the} {position}]",
    "what looks like {a}[ {size}][ {colour}] {shape}[ in {the} {position}]",
    "simple picture of {a}[ {size}][ {colour}] {shape}[ in {the} {position} corner]",
    "{a}[ {size}][ {colour}] {shape}[ is in {the} {position}]",
    "{a}[ {size}][ {colour}] {shape}[ placed {position}]",
    "{a}[ {size}][ {colour}] {shape}[ in {the} {position} part of the picture]",
    # position first
    "in {the} {position} corner sits {a}[ {size}][ {colour}] {shape}",
    "[{position} of the frame: ]{a}[ {size}][ {colour}] {shape} on a dark background",
    "[{position}: ]{a}[ {colour}] {shape}[, {size}]",
    "[{position} corner: ]{a}[ {size}][ {colour}] {shape}",
    "[in {the} {position}, ]there is {a}[ {size}][ {colour}] {shape}",
    "[at {the} {position}, ]{a}[ {colour}] {shape}[, {size}]",
    "{the}[ {position}] corner has {a}[ {size}][ {colour}] {shape}",
    # size or colour after the noun
    "{a}[ {colour}] {shape}[, {size},][ placed in {the} {position} of the picture]",
    "{a} {shape} that is {colour} and {size}[ appears at {the} {position}]",
    "{a}[ {size}] {shape}[ in {colour}][ at {the} {position}]",
    "photo of {a}[ {colour}] {shape}[, {size}][, {position} corner]",
    "{a}[ {size}] {shape}[, {colour},][ in {the} {position} corner]",
    "{a} {shape}[ in {colour}][, {size}][, {position}]",
    "{a} {shape}[ drawn in {colour}][, {size},][ at {the} {position}]",
    "the {shape} is {colour} and {size}[ and sits in {the} {position}]",
    "{a}[ {size}] {shape}, {colour}[, in {the} {position}]",
    "{a}[ {colour}] {shape} that is {size}[, {position}]",
    "{a}[ {size}] {shape}[ at {the} {position}][, in {colour}]",
    "[{position}: ]{a}[ {size}] {shape}[, {colour}]",
    # tag-like lists
    "[{colour} ]{shape}[, {size}][, {position}]",
    "{shape}[, {colour}][, {size}][, {position}]",
    "[{size}, ][{colour}, ]{shape}[, {position}]",
    "[{position}, ][{size}, ][{colour}, ]{shape}",
    "[{colour} ]{shape}[ ({size})][ at {position}]",
    "only one {shape}[: {colour}][, {size}][, {position}]",
    "[{position}: ]{shape}[, {colour}][, {size}]",
    # partial by design: sentences that never name one attribute
    "the {shape}[ in {the} {position} corner] is {colour}",
    "a {size} {shape}[ somewhere in the {position}]",
    "{a}[ {colour}] {shape} near the {position} corner",
)

TRAINING = Wording("training", _TRAINING_TEMPLATES, _TRAINING_SYNONYMS,
                   generic_shapes=("shape", "object", "thing"))

"""The training wording (many sentence shapes, synonyms, typing noise, partial captions) and the
held-out wording: every caption parses back to what it states, and the two wordings are disjoint
exactly as ``invcap.data.heldout_wording``'s docstring defines."""

import ast
import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from invcap.data import embedded as E
from invcap.data.heldout_wording import HELDOUT
from invcap.data.wording import (ATTRIBUTE_NAMES, OMITTED_COUNT_P, PARTIAL_RATE, TRAINING, Wording, normalise,
                                 skeleton, template_slots)

SRC = Path(__file__).resolve().parents[1] / "src" / "invcap"
MENTION_SETS = [m for k in range(1, 5) for m in itertools.combinations(ATTRIBUTE_NAMES, k)]


def _skeletons(wording: Wording) -> dict[str, int]:
    """Every sentence shape the wording can produce: skeleton -> template index."""
    return {skeleton(wording.templates[i], m): i for m in MENTION_SETS for i in wording.templates_for(m)}


def _slot_order(template: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(re.findall(r"\{(shape|colour|size|position)\}", template)))


def _sample(wording: Wording, n: int = 1500, seed: int = 0):
    rng = np.random.default_rng(seed)
    combos = E.all_combinations()
    for i in range(n):
        a = combos[i % len(combos)]
        yield a, wording.caption(a, rng, Wording.draw_omission(rng) if i % 3 else ())


def test_attribute_names_match_the_dataset():
    assert ATTRIBUTE_NAMES == tuple(E.ATTRIBUTES)
    for wording in (TRAINING, HELDOUT):
        for attribute, values in E.ATTRIBUTES.items():
            assert set(wording.synonyms[attribute]) == set(values)


def test_training_has_forty_sentence_shapes_in_varied_attribute_order():
    full = TRAINING.full_templates
    assert len(full) >= 40
    assert len({skeleton(TRAINING.templates[i], ATTRIBUTE_NAMES) for i in full}) == len(full)  # all different
    orders = {_slot_order(TRAINING.templates[i]) for i in full}
    assert len(orders) >= 8
    assert {order[0] for order in orders} == set(ATTRIBUTE_NAMES)  # any attribute may come first
    assert {order[-1] for order in orders} >= {"shape", "position", "size", "colour"}
    # every way of leaving attributes out has several sentence shapes
    assert all(len(TRAINING.templates_for(m)) >= 5 for m in MENTION_SETS)


def test_training_synonyms_include_the_everyday_words():
    everyday = {"shape": {"circle": {"ball", "dot"}, "square": {"box"}, "cross": {"plus"}},
                "size": {"small": {"tiny", "little"}, "large": {"big", "huge"}},
                "position": {"top left": {"upper left"}}}
    for attribute, values in everyday.items():
        for value, words in values.items():
            assert words <= set(TRAINING.synonyms[attribute][value])
    for attribute, values in E.ATTRIBUTES.items():  # the bare value names are training phrases
        assert all(v in TRAINING.synonyms[attribute][v] for v in values)


@pytest.mark.parametrize("wording", [TRAINING, HELDOUT], ids=["training", "heldout"])
def test_every_caption_parses_back_to_what_it_states(wording):
    for attributes, caption in _sample(wording):
        assert wording.parse(caption.text) == {k: attributes[k] for k in caption.mentions}, caption
        assert set(caption.mentions) | set(caption.omitted) == set(ATTRIBUTE_NAMES)
        assert not set(caption.mentions) & set(caption.omitted)
        assert "  " not in caption.text and not re.search(r"[,:]\s*[,.:!]|^\W|\s[,.]", caption.text), caption
        assert "{" not in caption.text and "[" not in caption.text


def test_typing_variants_appear():
    texts = [c.text for _, c in _sample(TRAINING, 3000, seed=1)]
    assert any(t.endswith(".") for t in texts) and any(t.endswith("!") for t in texts)
    assert any(t[-1].isalpha() for t in texts)  # no final punctuation
    assert any(t[0].islower() for t in texts) and any(t[0].isupper() and not t.isupper() for t in texts)
    assert any(t.isupper() for t in texts)
    low = [t.lower() for t in texts]
    assert any("colour" in t for t in low) and any("color" in t and "colour" not in t for t in low)
    assert any("top-left" in t for t in low) and any("top left" in t for t in low)
    assert any(t.startswith(("a ", "an ")) for t in low) and any(re.match(r"^(small|tiny|red|big)\b", t) for t in low)
    assert any(" an " in f" {t} " for t in low)  # article agreement ("an average-sized ...")
    assert not any(re.search(r"\ba [aeiou]", t) for t in low)


def test_partial_captions_rate_and_omission_counts():
    rng = np.random.default_rng(2)
    combos = E.all_combinations()
    captions = [c for i in range(800) for c in TRAINING.captions(combos[i % 192], rng, 5, PARTIAL_RATE)]
    partial = [c for c in captions if not c.full]
    assert abs(len(partial) / len(captions) - PARTIAL_RATE) < 0.03
    counts = np.bincount([len(c.omitted) for c in partial], minlength=4)[1:] / len(partial)
    assert np.allclose(counts, list(OMITTED_COUNT_P.values()), atol=0.04)
    for attribute in ATTRIBUTE_NAMES:  # each attribute is left out in a fair share of them
        assert 0.25 < np.mean([attribute in c.omitted for c in partial]) < 0.55
    groups = [captions[i:i + 5] for i in range(0, len(captions), 5)]
    assert all(any(c.full for c in g) for g in groups)  # every image keeps one full caption
    assert all(len({c.template for c in g}) == 5 for g in groups)


def test_bad_omissions_are_errors():
    rng = np.random.default_rng(0)
    a = E.all_combinations()[0]
    with pytest.raises(ValueError, match="proper subset"):
        TRAINING.caption(a, rng, omit=ATTRIBUTE_NAMES)
    with pytest.raises(ValueError, match="proper subset"):
        TRAINING.caption(a, rng, omit=("texture",))
    with pytest.raises(ValueError, match="exactly one attribute slot"):
        template_slots("a [{size} {colour}] {shape}")


# --- the held-out wording -------------------------------------------------------------------

def test_heldout_shares_no_sentence_shape_with_training():
    train, held = _skeletons(TRAINING), _skeletons(HELDOUT)
    assert len(held) >= 15 * 4
    shared = set(train) & set(held)
    assert not shared, {s: (TRAINING.templates[train[s]], HELDOUT.templates[held[s]]) for s in shared}
    assert len(HELDOUT.full_templates) >= 15


def test_heldout_shares_no_phrase_and_never_says_a_bare_value_name():
    for attribute in ATTRIBUTE_NAMES:
        train = {normalise(p) for ps in TRAINING.synonyms[attribute].values() for p in ps}
        for value, phrases in HELDOUT.synonyms[attribute].items():
            held = {normalise(p) for p in phrases}
            assert len(held) >= 2 and not held & train, (attribute, value, held & train)
            for phrase in held:
                for name in E.ATTRIBUTES[attribute]:
                    assert not re.search(rf"(?<!\w){normalise(name)}(?!\w)", phrase), (phrase, name)
    generic = {normalise(p) for p in HELDOUT.generic_shapes}
    assert generic and not generic & {normalise(p) for p in TRAINING.generic_shapes}
    assert not any(normalise(s) in g.split() for g in generic for s in E.ATTRIBUTES["shape"])


def test_no_training_caption_uses_a_heldout_phrase(tmp_path):
    held = [normalise(p) for a in ATTRIBUTE_NAMES for ps in HELDOUT.synonyms[a].values() for p in ps]
    held += [normalise(p) for p in HELDOUT.generic_shapes]
    patterns = [re.compile(rf"(?<!\w){re.escape(p)}(?!\w)") for p in held]
    for _, caption in _sample(TRAINING, 1000, seed=3):
        text = normalise(caption.text)
        assert not any(p.search(text) for p in patterns), caption.text


def test_heldout_wording_is_imported_only_to_evaluate():
    training_path = ["data/wording.py", "data/flickr30k.py", "data/rehearsal.py", "features.py", "text.py",
                     "autoencoder.py", "captioning.py", "methods.py", "losses.py", "inn.py", "judge.py"]
    for name in training_path:
        path = SRC / name
        if path.is_file():
            modules = [n.module or "" for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)]
            modules += [a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import)
                        for a in n.names]
            assert not any("heldout" in m for m in modules), f"{name} must not import the held-out wording"
    # the dataset module imports it in evaluation_captions only, never where it writes the dataset
    tree = ast.parse((SRC / "data/embedded.py").read_text())
    importers = {fn.name for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
                 for node in ast.walk(fn) if isinstance(node, ast.ImportFrom) and "heldout" in (node.module or "")}
    top_level = [n for n in tree.body if isinstance(n, ast.ImportFrom) and "heldout" in (n.module or "")]
    assert importers == {"evaluation_captions"} and not top_level


# --- evaluation captions --------------------------------------------------------------------

def test_evaluation_captions_are_deterministic_full_or_partial_and_in_either_wording():
    combos = E.all_combinations()[:24]
    full = E.evaluation_captions(combos, n=4, seed=3)
    assert full == E.evaluation_captions(combos, n=4, seed=3)
    assert full != E.evaluation_captions(combos, n=4, seed=4)
    assert E.evaluation_captions(combos[5:7], n=4, seed=3) != full[5:7]  # keyed by position in the list...
    assert E.evaluation_captions(combos[:7], n=4, seed=3) == full[:7]   # ...so a prefix gives the same captions
    for a, caps in zip(combos, full):
        assert len(caps) == 4 and len({c.template for c in caps}) == 4
        assert all(c.full and TRAINING.parse(c.text) == a for c in caps)
    held = E.evaluation_captions(combos, n=3, wording="heldout", seed=3)
    for a, caps in zip(combos, held):
        assert all(c.full and HELDOUT.parse(c.text) == a for c in caps)
    for wording, parser in (("training", TRAINING), ("heldout", HELDOUT)):
        for omit in (("position",), ("shape", "size")):
            part = E.evaluation_captions(combos, n=2, wording=wording, partial=True, omit=omit, seed=0)
            for a, caps in zip(combos, part):
                for c in caps:
                    assert c.omitted == omit and parser.parse(c.text) == {k: a[k] for k in c.mentions}
        drawn = E.evaluation_captions(combos, n=5, wording=wording, partial=True, seed=0)
        assert all(not c.full for caps in drawn for c in caps)
        assert len({c.omitted for caps in drawn for c in caps}) > 5


def test_evaluation_captions_reject_bad_requests():
    a = E.all_combinations()[:2]
    with pytest.raises(ValueError, match="wording must be one of"):
        E.evaluation_captions(a, wording="flickr")
    with pytest.raises(ValueError, match="needs partial=True"):
        E.evaluation_captions(a, omit=("size",))
    with pytest.raises(ValueError, match="proper subset"):
        E.evaluation_captions(a, partial=True, omit=ATTRIBUTE_NAMES)
    with pytest.raises(ValueError, match="lack"):
        E.evaluation_captions([{"shape": "circle"}])

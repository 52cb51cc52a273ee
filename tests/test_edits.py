"""The strict edit parser: good blocks apply, and every malformed output is an InvalidEdit
with a reason (fuzzed: truncation, nested markers, CRLF, non-UTF-8, empty, essays)."""
from __future__ import annotations

import random

import pytest

from agents.backends.base import Proposal
from agents.edits import apply_edit, line_delta, parse_edit, validate_source
from agents.errors import InvalidEdit
from tests.fake_coordinator import TINY_TRAIN

LIMITS = dict(max_edit_bytes=20_000, max_file_bytes=200_000)
GOOD = ("DESCRIPTION: deeper model\n```python\ntrain.py\n<<<<<<< SEARCH\nDEPTH = 4  # layers\n"
        "=======\nDEPTH = 6  # layers\n>>>>>>> REPLACE\n```\n")


def resolve(text):
    return Proposal(text=text).resolve(TINY_TRAIN, **LIMITS)


def test_search_replace_applies():
    new, desc = resolve(GOOD)
    assert desc == "deeper model"
    assert "DEPTH = 6  # layers" in new and "DEPTH = 4" not in new
    assert line_delta(TINY_TRAIN, new) == (1, 1)


def test_crlf_and_trailing_spaces_are_tolerated():
    text = GOOD.replace("\n", "\r\n").replace("DEPTH = 4  # layers", "DEPTH = 4  # layers   ")
    new, _ = resolve(text)
    assert "DEPTH = 6" in new


def test_whole_file_form():
    body = TINY_TRAIN.replace("WINDOW = \"SL\"", "WINDOW = \"L\"")
    new, desc = resolve(f"DESCRIPTION: full window\nFILE: train.py\n```python\n{body}```\n")
    assert new == body and desc == "full window"


def test_two_blocks_apply_in_order():
    text = GOOD + GOOD.replace("DEPTH = 4", "X").replace("DEPTH = 6", "Y").replace(
        "X  # layers", "LEARNING_RATE = 0.04  # per step").replace("Y  # layers", "LEARNING_RATE = 0.02  # per step")
    new, _ = resolve(text)
    assert "LEARNING_RATE = 0.02" in new and "DEPTH = 6" in new


@pytest.mark.parametrize("text,reason", [
    ("", "empty output"),
    ("   \n\n", "empty output"),
    (b"DESCRIPTION: x\n\xff\xfe garbage", "not valid UTF-8"),
    ("I would increase the depth because deeper models learn more. " * 40, "no edit found"),
    (GOOD.replace(">>>>>>> REPLACE\n```\n", ""), "truncated"),
    (GOOD.split("=======")[0], "truncated"),
    (GOOD.replace("=======\n", "<<<<<<< SEARCH\n=======\n"), "nested SEARCH"),
    (GOOD.replace("train.py", "prepare.py"), "prepare.py"),
    (GOOD.replace("train.py", "../trainer/runner.py"), "runner.py"),
    ("FILE: trainer/api.py\n```python\nx = 1\n```\n", "trainer/api.py"),
    (GOOD.replace("DEPTH = 4  # layers\n=", "NOT_THERE = 1\n="), "not found"),
    (GOOD.replace("DEPTH = 6  # layers", "DEPTH = (6"), "does not compile"),
    (GOOD.replace("DEPTH = 6  # layers", "DEPTH = 4  # layers"), "changes nothing"),
    ("FILE: train.py\n```python\nx = 1\n", "truncated whole-file"),
    (GOOD + "FILE: train.py\n```python\nx = 1\n```\n", "both"),
    ("=======\nstray\n", "stray edit marker"),
    ("<<<<<<< SEARCH\n=======\nx\n>>>>>>> REPLACE\n", "SEARCH section is empty"),
    (GOOD.replace("DEPTH = 4  # layers\n=", "\n=").replace("SEARCH\n\n", "SEARCH\n"), "empty"),
    ("x\0y", "NUL"),
])
def test_malformed_outputs_are_invalid_with_reason(text, reason):
    with pytest.raises(InvalidEdit, match=reason.replace("(", r"\(").replace(".", r"\.")):
        resolve(text)


def test_ambiguous_search_is_invalid():
    src = TINY_TRAIN + "\nDEPTH = 4  # layers\n"
    with pytest.raises(InvalidEdit, match="occurs 2 times"):
        apply_edit(parse_edit(GOOD), src, max_edit_bytes=10_000)


def test_size_limits():
    big = "DESCRIPTION: huge\ntrain.py\n<<<<<<< SEARCH\nDEPTH = 4  # layers\n=======\n" + \
          "\n".join(f"PAD_{i} = {i}" for i in range(3000)) + "\n>>>>>>> REPLACE\n"
    with pytest.raises(InvalidEdit, match="over the limit"):
        resolve(big)
    with pytest.raises(InvalidEdit, match="over the limit"):
        Proposal(new_source=TINY_TRAIN + "X = 1\n" * 5000).resolve(TINY_TRAIN, **LIMITS)
    with pytest.raises(InvalidEdit, match="bytes, over"):
        validate_source(TINY_TRAIN + "#" * 300, TINY_TRAIN, max_file_bytes=300)


def test_command_style_touched_files_are_invalid():
    with pytest.raises(InvalidEdit, match="notes.txt"):
        Proposal(new_source=TINY_TRAIN.replace("4", "5"), touched=["notes.txt"]).resolve(TINY_TRAIN, **LIMITS)


def test_fuzz_never_raises_anything_but_invalid_edit():
    rng = random.Random(1234)
    pieces = [GOOD, "<<<<<<< SEARCH\n", "=======\n", ">>>>>>> REPLACE\n", "FILE: train.py\n",
              "```python\n", "```\n", "DEPTH = 4  # layers\n", "DESCRIPTION: x\n", "\r\n",
              "train.py\n", "prepare.py\n", "\x00", "é", "<<<<<<<", "lorem ipsum\n"]
    applied = 0
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.3:
            text = text[:rng.randint(0, len(text))]
        raw = text.encode()
        if rng.random() < 0.1 and raw:
            k = rng.randrange(len(raw))
            raw = raw[:k] + bytes([rng.randrange(128, 256)]) + raw[k + 1:]
        try:
            new, _ = Proposal(text=raw).resolve(TINY_TRAIN, **LIMITS)
        except InvalidEdit as e:
            assert str(e) and "\n" not in str(e)
        else:
            compile(new, "train.py", "exec")
            assert new != TINY_TRAIN
            applied += 1
    assert applied > 0


def test_lenient_where_safe_fenced_sections_and_markdown_keywords():
    fenced = ("Here you go.\n\n**DESCRIPTION:** deeper model\n\ntrain.py\n<<<<<<< SEARCH\n```python\n"
              "DEPTH = 4  # layers\n```\n=======\n```python\nDEPTH = 6  # layers\n```\n>>>>>>> REPLACE\n")
    new, desc = resolve(fenced.replace("\n", "\r\n"))
    assert desc == "deeper model" and "DEPTH = 6  # layers\n" in new and "```" not in new
    body = TINY_TRAIN.replace("DEPTH = 4", "DEPTH = 5")
    new, desc = resolve(f"## DESCRIPTION: five\n**FILE: `train.py`**\n```python\n{body}```\n")
    assert new == body and desc == "five"


def test_worked_example_is_a_real_edit_of_the_file_it_is_shown_on():
    from importlib import resources

    from agents.edits import worked_example
    baseline = (resources.files("trainer") / "baseline" / "train.py").read_text()
    for src in (TINY_TRAIN, baseline):
        example = worked_example(src)
        assert "exact lines" not in example and "..." not in example   # no placeholder
        new = apply_edit(parse_edit(example), src, max_edit_bytes=10_000)
        validate_source(new, src, max_file_bytes=200_000)
        assert line_delta(src, new) == (1, 1)
    assert worked_example("x = 1\n") is None

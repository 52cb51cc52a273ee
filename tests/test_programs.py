"""Every shipped program parses with the agents' parser, declares a search space over real
constants of the baseline train.py, and suggests an adopt rule."""
import re
from pathlib import Path

import pytest

from agents.program import load_program

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"
NAMES = ["baseline", "optimizer", "architecture", "schedule", "simplify", "explore"]


def _baseline_constants() -> set[str]:
    import importlib.resources
    # the shipped baseline (package data), the same file trainer.baseline_path() names
    text = (importlib.resources.files("trainer") / "baseline" / "train.py").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*=", text, re.M))


@pytest.mark.parametrize("name", NAMES)
def test_program_parses_with_a_search_space(name):
    p = load_program(PROGRAMS / f"{name}.md")
    assert p.search_space, f"{name}: no mutate search space"
    assert p.adopt in ("always", "if-better", "never")
    # a real program for an LLM: it says what the harness does and what is locked
    assert "val_bpb" in p.text and "locked" in p.text and len(p.text) > 1500


@pytest.mark.parametrize("name", NAMES)
def test_search_space_names_exist_in_the_baseline(name):
    consts = _baseline_constants()
    missing = set(load_program(PROGRAMS / f"{name}.md").search_space) - consts
    assert not missing, f"{name}.md: not constants of the baseline train.py: {sorted(missing)}"


def test_programs_diverge():
    spaces = [frozenset(load_program(PROGRAMS / f"{n}.md").search_space) for n in NAMES]
    texts = [(PROGRAMS / f"{n}.md").read_text() for n in NAMES]
    assert len(set(spaces)) >= 5
    assert len({t.split("## How this harness works")[0] for t in texts}) == len(NAMES)

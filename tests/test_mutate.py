"""The `mutate` backend and the program search-space schema."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.backends.base import ProposalContext, make_backend
from agents.backends.mutate import MutateBackend, find_constants
from agents.errors import ProgramError
from agents.program import load_program, parse_program
from tests.fake_coordinator import TINY_PROGRAM, TINY_TRAIN

LIMITS = dict(max_edit_bytes=20_000, max_file_bytes=200_000)


def ctx(source=TINY_TRAIN, program=TINY_PROGRAM):
    return ProposalContext(program=parse_program(program, "tiny"), source=source,
                           base_commit="0" * 40, agent="a")


def value(src, name):
    return find_constants(src)[name].value


def test_steps_stay_in_space_and_describe_themselves():
    b = make_backend({"type": "mutate"}, seed=7)
    space = parse_program(TINY_PROGRAM, "tiny").search_space
    src = TINY_TRAIN
    seen = set()
    for _ in range(40):
        p = b.propose(ctx(src))
        new, desc = p.resolve(src, **LIMITS)
        changes = re.findall(r"(\w+) (\S+) -> (\S+)", desc)
        assert 1 <= len(changes) <= 2
        for name, old, _after in changes:
            assert repr(value(src, name)) == old or str(value(src, name)) == old.strip("'")
            v = value(new, name)
            prm = space[name]
            if prm.type == "choice":
                assert v in prm.values and v != value(src, name)
            else:
                assert prm.min <= v <= prm.max
            if name == "DEPTH":
                assert isinstance(v, int) and abs(v - value(src, name)) <= 2
            if name == "LEARNING_RATE":
                ratio = v / value(src, name)
                assert any(abs(ratio - 1.5 ** k) < 0.01 * 1.5 ** abs(k) for k in (-2, -1, 1, 2)) \
                    or v in (0.001, 0.5)
        # comments and the rest of the file are untouched
        assert new.count("#") == src.count("#") and "def main" in new
        assert new not in seen
        seen.add(new)
        src = new


def test_same_seed_same_proposals_and_no_repeats():
    a, b = MutateBackend(seed=1), MutateBackend(seed=1)
    pa = [a.propose(ctx()).description for _ in range(5)]
    pb = [b.propose(ctx()).description for _ in range(5)]
    assert pa == pb
    outs = [a.propose(ctx()).new_source for _ in range(30)]
    assert len(set(outs)) == len(outs)


def test_exhausted_space_is_an_error_not_a_repeat():
    prog = "```yaml\nsearch_space:\n  DEPTH: {type: int, min: 3, max: 5}\n```\n"
    b = MutateBackend(seed=0, max_changes=1)
    got = {b.propose(ctx(program=prog)).new_source for _ in range(2)}
    assert len(got) == 2 and None not in got
    p = b.propose(ctx(program=prog))
    assert p.error and "exhausted" in p.error


def test_missing_constants_and_no_space():
    p = MutateBackend().propose(ctx(program="```yaml\nsearch_space:\n  NOPE: {type: int, min: 1, max: 3}\n```"))
    assert "NOPE" in p.error
    # no declared space: numbers within 10x of their current value
    p = MutateBackend(seed=2).propose(ctx(program="# free\n"))
    new, _ = p.resolve(TINY_TRAIN, **LIMITS)
    assert new != TINY_TRAIN
    assert MutateBackend().fix(ctx(), "Traceback").error


def test_constant_arithmetic_is_understood():
    src = "TOTAL = 2**14  # tokens\nRATE = 1e-3  # per step\nNAME = 'x'\nrate = 5\n"
    consts = find_constants(src)
    assert consts["TOTAL"].value == 16384 and consts["RATE"].value == 0.001
    assert "rate" not in consts


@pytest.mark.parametrize("block,msg", [
    ("search_space:\n  LR: {type: log, min: 0.1, max: 0.01}", "search_space.LR: .*min must be <= max"),
    ("search_space:\n  LR: {type: log, min: 0, max: 1}", "search_space.LR.min"),
    ("search_space:\n  LR: {type: log, min: 0.1, max: 1, stp: 2}", "search_space.LR.stp"),
    ("search_space:\n  lr: {type: int, min: 1, max: 2}", "search_space.lr: not an UPPER_CASE"),
    ("search_space:\n  W: {type: choice, values: [a]}", "search_space.W.values"),
    ("search_space: [1, 2]", "search_space: expected a mapping"),
    ("adopt: sometimes", "adopt: 'sometimes'"),
    ("serch_space: {}", "unknown key 'serch_space'"),
    ("search_space: {A: {type: int, min: 1, max: [}", "yaml block"),
])
def test_program_errors_name_the_file_and_key(block, msg, tmp_path):
    path = tmp_path / "prog.md"
    path.write_text(f"# p\n```yaml\n{block}\n```\n")
    with pytest.raises(ProgramError, match=msg) as e:
        load_program(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_program_adopt_and_missing_file(tmp_path):
    assert parse_program("```yaml\nadopt: never\n```", "p").adopt == "never"
    with pytest.raises(ProgramError, match="cannot read"):
        load_program(tmp_path / "missing.md")


def test_reading_constants_in_two_threads_at_once_never_raises():
    """CPython 3.11 keeps the AST converter's recursion depth per interpreter, not per thread
    (python/cpython#106905): when a thread switch lands inside one ast.parse (a GC callback, a
    finalizer) and another thread parses from a different stack depth, the first raises
    SystemError "AST constructor recursion depth mismatch". The research bench hit it with optuna
    agents (one agent's observe while another proposed); in a swarm an agent's proposal prepared
    ahead and its backend's bookkeeping can meet so too. The switch is forced here: a GC callback
    inside the first parse lets a second thread parse, deeper in its stack, and waits for it."""
    import gc
    import threading

    from trainer import baseline_path

    src = Path(baseline_path()).read_text()
    inside, other_done, errors = threading.Event(), threading.Event(), []
    a_ident: list[int] = []

    def other():
        inside.wait(10)

        def deep(n):
            return find_constants(src) if n == 0 else deep(n - 1)
        try:
            deep(40)
        except SystemError as e:
            errors.append(("other", e))
        other_done.set()

    def callback(phase, info):
        if phase == "start" and a_ident and threading.get_ident() == a_ident[0] and not inside.is_set():
            inside.set()
            other_done.wait(1.0)   # with a lock in the way the other thread waits: time out

    t = threading.Thread(target=other)
    t.start()
    old = gc.get_threshold()
    gc.callbacks.append(callback)
    gc.set_threshold(5)
    try:
        a_ident.append(threading.get_ident())
        consts = find_constants(src)
    except SystemError as e:
        errors.append(("first", e))
        consts = {}
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*old)
        inside.set()
        t.join(20)
    assert inside.is_set()
    assert errors == [] and "DEPTH" in consts

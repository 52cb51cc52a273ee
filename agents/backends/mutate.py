"""`mutate`: offline random search over train.py's UPPER_CASE constants (no key, no network).

Each proposal changes 1..max_changes constants inside the program's declared search space:
log-scaled rates move by a factor step**k, sizes by integer steps, strings among choices.
It is the honest baseline for "does the LLM beat random search?".
"""
from __future__ import annotations

import ast
import hashlib
import logging
import random
import threading
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.backends.base import Proposal, ProposalContext, register_backend
from agents.constraints import violated
from agents.program import ChoiceParam, FloatParam, IntParam, LogParam

log = logging.getLogger(__name__)

_MAX_TRIES = 200


class MutateSpec(BaseModel):
    """Offline random search over the program's declared search space."""
    model_config = ConfigDict(extra="forbid")
    type: Literal["mutate"] = "mutate"
    max_changes: int = Field(default=2, ge=1, le=5)   # constants changed per proposal (1..n)


@dataclass
class Constant:
    """One module-level `NAME = literal` (or `NAME = a if COND else b`, a device switch) on a
    single line. `values` holds one literal, or the two branches of the conditional."""
    name: str
    values: tuple
    line: int          # 0-based
    col: int
    end_col: int
    cond: str | None = None

    @property
    def value(self):
        return self.values[-1] if self.cond is None else self.values

    def render(self, values) -> str:
        if self.cond is None:
            return _fmt(values[0])
        return f"{_fmt(values[0])} if {self.cond} else {_fmt(values[1])}"


# CPython 3.11 keeps the converter between C and Python ASTs' recursion depth per interpreter,
# not per thread (python/cpython#106905): a thread switch inside one ast.parse (a GC callback, a
# finalizer) and a parse in another thread make the first raise SystemError "AST constructor
# recursion depth mismatch". An agent parses train.py in its loop and in the thread that prepares
# its next proposal (the research bench, with 8 agents in one process, hit it): one at a time.
AST_LOCK = threading.Lock()


def _eval_const(node: ast.AST):
    """Literal value of a constant expression (numbers with + - * / ** allowed), or raise."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    for sub in ast.walk(node):
        if not isinstance(sub, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator,
                                ast.unaryop)):
            raise ValueError("not a constant expression")
    with AST_LOCK:
        code = compile(ast.Expression(node), "<const>", "eval")
    return eval(code, {"__builtins__": {}})


def _scalar(v) -> bool:
    return isinstance(v, (bool, int, float, str))


def find_constants(source: str) -> dict[str, Constant]:
    """Module-level UPPER_CASE constants with literal (or constant-arithmetic) values, and
    device switches `A if CUDA else B` whose branches are literals."""
    out: dict[str, Constant] = {}
    try:
        with AST_LOCK:
            tree = ast.parse(source)
    except SyntaxError:
        return out
    lines = source.split("\n")
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
                and node.value.lineno == node.value.end_lineno):
            continue
        v = node.value
        name = node.targets[0].id
        try:
            if isinstance(v, ast.IfExp):
                values = (_eval_const(v.body), _eval_const(v.orelse))
                # ast offsets are UTF-8 bytes; get_source_segment re-splits the whole file per
                # call (80 ms for the baseline train.py), this is one line
                t = v.test
                cond = lines[t.lineno - 1].encode()[t.col_offset:t.end_col_offset].decode() \
                    if t.lineno == t.end_lineno else ast.get_source_segment(source, t)
            else:
                values, cond = (_eval_const(v),), None
        except Exception:
            continue
        if all(_scalar(x) for x in values):
            out[name] = Constant(name, values, v.lineno - 1, v.col_offset, v.end_col_offset, cond)
    return out


def _fmt(value) -> str:
    if isinstance(value, (bool, int, str)):
        return repr(value)
    text = f"{value:.4g}"
    return text if any(c in text for c in ".en") else text + ".0"


def default_space(consts: dict[str, Constant]) -> dict:
    """A fallback search space when the program declares none: numbers within 10x."""
    space = {}
    for c in consts.values():
        v = c.values[-1]
        if isinstance(v, bool) or isinstance(v, str):
            continue
        if isinstance(v, int) and v > 0:
            space[c.name] = IntParam(type="int", min=max(1, v // 2), max=v * 2, step=max(1, v // 8))
        elif isinstance(v, float) and v > 0:
            space[c.name] = LogParam(type="log", min=v / 10, max=v * 10, step=1.3)
    return space


def step_value(value, param, rng: random.Random, k: int | None = None):
    """`value` moved k steps (random k when None) inside `param`; may return the same value
    at a bound. Choices move k positions along the list (random other value when not in it)."""
    if k is None:
        k = rng.choice([-2, -1, -1, 1, 1, 2])
    if isinstance(param, ChoiceParam):
        if value in param.values and type(value) in {type(x) for x in param.values}:
            i = param.values.index(value)
            return param.values[min(len(param.values) - 1, max(0, i + k))]
        return rng.choice(param.values)
    if isinstance(param, LogParam):
        base = value if isinstance(value, (int, float)) and value > 0 else param.min
        new = min(param.max, max(param.min, base * param.step ** k))
        if isinstance(value, int) and not isinstance(value, bool):
            return int(round(new))
        return float(f"{new:.4g}")
    if isinstance(param, IntParam):
        base = int(value) if isinstance(value, (int, float)) else param.min
        return min(param.max, max(param.min, base + k * param.step))
    if isinstance(param, FloatParam):
        base = float(value) if isinstance(value, (int, float)) else param.min
        new = min(param.max, max(param.min, base + k * param.step))
        return float(f"{new:.6g}")
    raise TypeError(f"unknown parameter type {type(param).__name__}")


class MutateBackend:
    """Random steps over the search space; never proposes a file state it already tried."""

    name = "mutate"

    def __init__(self, seed: int = 0, max_changes: int = 2):
        self.rng = random.Random(seed)
        self.max_changes = max_changes
        self.seen: set[str] = set()

    def propose(self, ctx: ProposalContext) -> Proposal:
        """A new train.py with 1..max_changes constants stepped; `error` when none can be."""
        consts = find_constants(ctx.source)
        space = dict(ctx.program.search_space) or default_space(consts)
        names = sorted(n for n in space if n in consts)
        if not names:
            return Proposal(error="mutate: none of the search-space constants "
                                  f"({', '.join(sorted(space)) or 'none'}) is in train.py")
        self.seen.add(_digest(ctx.source))
        lines = ctx.source.split("\n")
        checks = ctx.program.checks()
        read = {n: consts[n].values for n in ctx.program.constraint_names() if n in consts}
        for _ in range(_MAX_TRIES):
            picks = self.rng.sample(names, min(len(names), self.rng.randint(1, self.max_changes)))
            new_lines = list(lines)
            changes = []
            moved: dict[str, tuple] = {}
            for n in sorted(picks, key=lambda n: (consts[n].line, -consts[n].col)):
                c = consts[n]
                k = self.rng.choice([-2, -1, -1, 1, 1, 2])
                # Both branches of a device switch move by the same step.
                new = tuple(step_value(v, space[n], self.rng, k) for v in c.values)
                if all(a == b and type(a) is type(b) for a, b in zip(new, c.values)):
                    continue
                ln = new_lines[c.line]
                new_lines[c.line] = ln[:c.col] + c.render(new) + ln[c.end_col:]
                changes.append(f"{n} {c.render(c.values)} -> {c.render(new)}")
                moved[n] = new
            if not changes:
                continue
            if checks and not all(violated(checks, v) is None for v in branch_values(read, moved)):
                continue   # a point the program's constraints rule out: never trained
            new_source = "\n".join(new_lines)
            h = _digest(new_source)
            if h in self.seen:
                continue
            self.seen.add(h)
            return Proposal(description=", ".join(changes), new_source=new_source)
        return Proposal(error="mutate: search space exhausted (every nearby state already tried)", spent=True)

    def fix(self, ctx: ProposalContext, log_tail: str) -> Proposal:
        """Random search cannot repair a crash: always an `error` Proposal (no fix attempt)."""
        return Proposal(error="mutate cannot fix a crash")


def branch_values(values: dict[str, tuple], moved: dict[str, tuple]) -> list[dict]:
    """name -> value on each device branch (`A if CUDA else B`: two; plain constants only: one),
    with `moved`'s values in place of the constants' own: what the constraints are checked on."""
    merged = {**values, **moved}
    n = max((len(v) for v in merged.values()), default=1)
    return [{k: v[min(j, len(v) - 1)] for k, v in merged.items()} for j in range(n)]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


register_backend("mutate", lambda spec, *, seed=0, agent="": MutateBackend(seed, spec.max_changes),
                 MutateSpec)

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
from dataclasses import dataclass

from agents.backends.base import Proposal, ProposalContext, register_backend
from agents.program import ChoiceParam, FloatParam, IntParam, LogParam

log = logging.getLogger(__name__)

_MAX_TRIES = 200


@dataclass
class Constant:
    """One module-level `NAME = literal` assignment on a single line."""
    name: str
    value: object
    line: int          # 0-based
    col: int
    end_col: int


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
    return eval(compile(ast.Expression(node), "<const>", "eval"), {"__builtins__": {}})


def find_constants(source: str) -> dict[str, Constant]:
    """Module-level UPPER_CASE constants with literal (or constant-arithmetic) values."""
    out: dict[str, Constant] = {}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return out
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
                and node.value.lineno == node.value.end_lineno):
            try:
                value = _eval_const(node.value)
            except Exception:
                continue
            if isinstance(value, (bool, int, float, str)):
                out[node.targets[0].id] = Constant(node.targets[0].id, value, node.value.lineno - 1,
                                                   node.value.col_offset, node.value.end_col_offset)
    return out


def _fmt(value) -> str:
    if isinstance(value, bool) or isinstance(value, int) or isinstance(value, str):
        return repr(value)
    text = f"{value:.4g}"
    return text if any(c in text for c in ".en") else text + ".0"


def default_space(consts: dict[str, Constant]) -> dict:
    """A fallback search space when the program declares none: numbers within 10x."""
    space = {}
    for c in consts.values():
        if isinstance(c.value, bool) or isinstance(c.value, str):
            continue
        if isinstance(c.value, int) and c.value > 0:
            space[c.name] = IntParam(type="int", min=max(1, c.value // 2), max=c.value * 2,
                                     step=max(1, c.value // 8))
        elif isinstance(c.value, float) and c.value > 0:
            space[c.name] = LogParam(type="log", min=c.value / 10, max=c.value * 10, step=1.3)
    return space


def step_value(value, param, rng: random.Random):
    """One random step of `value` inside `param`; may return the same value at a bound."""
    if isinstance(param, ChoiceParam):
        others = [v for v in param.values if v != value]
        return rng.choice(others or param.values)
    k = rng.choice([-2, -1, -1, 1, 1, 2])
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
        for _ in range(_MAX_TRIES):
            picks = self.rng.sample(names, min(len(names), self.rng.randint(1, self.max_changes)))
            new_lines = list(lines)
            changes = []
            for n in sorted(picks, key=lambda n: (consts[n].line, -consts[n].col)):
                c = consts[n]
                new = step_value(c.value, space[n], self.rng)
                if new == c.value and type(new) is type(c.value):
                    continue
                ln = new_lines[c.line]
                new_lines[c.line] = ln[:c.col] + _fmt(new) + ln[c.end_col:]
                changes.append(f"{n} {_fmt(c.value)} -> {_fmt(new)}")
            if not changes:
                continue
            new_source = "\n".join(new_lines)
            h = _digest(new_source)
            if h in self.seen:
                continue
            self.seen.add(h)
            return Proposal(description=", ".join(changes), new_source=new_source)
        return Proposal(error="mutate: search space exhausted (every nearby state already tried)")

    def fix(self, ctx: ProposalContext, log_tail: str) -> Proposal:
        """Random search cannot repair a crash: always an `error` Proposal (no fix attempt)."""
        return Proposal(error="mutate cannot fix a crash")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _factory(spec, *, seed: int = 0, agent: str = "") -> MutateBackend:
    max_changes = spec.get("max_changes", 2) if isinstance(spec, dict) else spec.max_changes
    return MutateBackend(seed=seed, max_changes=max_changes)


register_backend("mutate", _factory)

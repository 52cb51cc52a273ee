"""Search-space constraints: expressions over a program's constants that every point must satisfy.

A program's yaml block may declare, beside its search space,

    constraints:
      - MODEL_DIM % HEAD_DIM == 0      # heads of HEAD_DIM channels must tile the model width
      - DEPTH * MODEL_DIM <= 6144

so the offline backends never train a point the trainer cannot run (the architecture program's
space allowed MODEL_DIM 64 with HEAD_DIM 128: a reshape error, a run spent on a crash). An
expression is Python's arithmetic (+ - * / // %), comparisons (chains too, `in` a literal list),
`and` / `or` / `not`, numbers, strings and booleans, over train.py's UPPER_CASE constants (in the
search space or not: explore moves MODEL_DIM, and HEAD_DIM, which it leaves alone, must still
divide it). It is parsed
once, with a clear error naming what is not allowed, and evaluated by walking its tree (never
`eval`): a program file is the user's, but the values it meets come from hostile train.py files.

`Constraint.holds(values)` is True when the expression holds, False when it does not or cannot be
computed (a division by zero, a string where a number is needed), and True when a name it uses is
not among `values` (train.py has no such constant: nothing to check).
"""
from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
MAX_CHARS = 500
CONSTANT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")   # train.py's UPPER_CASE constants (programs too)


class ConstraintError(ValueError):
    """A constraint that cannot be used: the message names what is wrong, in one line."""


class _Missing(Exception):
    """A name the values do not hold."""


@dataclass(frozen=True)
class Constraint:
    text: str
    names: frozenset[str] = field(compare=False)
    _tree: ast.Expression = field(compare=False, repr=False)

    def holds(self, values: dict) -> bool:
        try:
            return bool(_eval(self._tree.body, values))
        except _Missing:
            return True
        except (ArithmeticError, TypeError, ValueError):
            return False


def parse_constraint(text: object) -> Constraint:
    """One constraint from its text. Raises ConstraintError."""
    if not isinstance(text, str) or not text.strip():
        raise ConstraintError(f"{text!r} is not an expression (expected a string such as "
                              "'MODEL_DIM % HEAD_DIM == 0')")
    if len(text) > MAX_CHARS:
        raise ConstraintError(f"{text[:40]!r}...: longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ConstraintError(f"{text!r}: not a Python expression ({e.msg})") from None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if not CONSTANT_NAME.match(node.id):
                raise ConstraintError(f"{text!r}: {node.id} is not an UPPER_CASE constant of train.py")
            names.add(node.id)
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (bool, int, float, str)):
                raise ConstraintError(f"{text!r}: {node.value!r} is not a number, string or boolean")
        elif not isinstance(node, (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.BinOp,
                                   ast.Compare, ast.Load, ast.Tuple, ast.List, *_BIN, *_CMP, *_UNARY)):
            raise ConstraintError(f"{text!r}: {type(node).__name__} is not allowed (arithmetic + - * / // %, "
                                  "comparisons, and/or/not, numbers and UPPER_CASE constants)")
    if not names:
        raise ConstraintError(f"{text!r}: names no constant of train.py")
    return Constraint(text.strip(), frozenset(names), tree)


def _eval(node: ast.AST, values: dict):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in values:
            raise _Missing(node.id)
        return values[node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_eval(e, values) for e in node.elts)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, values), _eval(node.right, values)
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
            raise TypeError("arithmetic on a non-number")
        return _BIN[type(node.op)](a, b)
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, values))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, values) for v in node.values)
        return any(_eval(v, values) for v in node.values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, values)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    raise TypeError(f"{type(node).__name__} is not allowed")


def violated(constraints: list[Constraint] | tuple[Constraint, ...], values: dict) -> Constraint | None:
    """The first constraint `values` break, or None when all hold."""
    for c in constraints:
        if not c.holds(values):
            return c
    return None

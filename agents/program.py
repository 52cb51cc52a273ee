"""Research programs: Markdown text plus an optional fenced ```yaml block that declares the
`mutate` search space and the program's suggested adopt rule.

    ```yaml
    adopt: if-better                 # optional: always | if-better | never
    search_space:
      LR_MATRIX: {type: log, min: 0.005, max: 0.1, step: 1.3}   # value * step**k
      WEIGHT_DECAY: {type: float, min: 0.0, max: 0.3, step: 0.05}  # value + step*k
      DEPTH: {type: int, min: 2, max: 8, step: 1}                # value + step*k
      WINDOW_PATTERN: {type: choice, values: ["L", "SL", "SSSL"]}
    constraints:                     # optional: points the backends never propose
      - MODEL_DIM % HEAD_DIM == 0    # (agents/constraints.py: the expressions allowed)
    ```
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, model_validator

from agents.constraints import CONSTANT_NAME, Constraint, ConstraintError, parse_constraint, violated
from agents.errors import ProgramError

_YAML_BLOCK = re.compile(r"^```ya?ml[ \t]*\r?\n(.*?)^```", re.M | re.S)


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Ranged(_P):
    """A parameter with [min, max] bounds: min may not exceed max."""

    @model_validator(mode="after")
    def _order(self):
        if self.min > self.max:
            raise ValueError("min must be <= max")
        return self


class LogParam(_Ranged):
    """A positive rate: steps multiply by `step` (> 1), clipped to [min, max]."""
    type: Literal["log"]
    min: float = Field(gt=0)
    max: float = Field(gt=0)
    step: float = Field(default=1.5, gt=1)


class FloatParam(_Ranged):
    """A real value stepped additively by `step`, clipped to [min, max]."""
    type: Literal["float"]
    min: float
    max: float
    step: float = Field(gt=0)


class IntParam(_Ranged):
    """A size or count stepped by an integer `step`, clipped to [min, max]."""
    type: Literal["int"]
    min: int
    max: int
    step: int = Field(default=1, ge=1)


class ChoiceParam(_P):
    """One of a fixed list of values (strings, numbers, booleans)."""
    type: Literal["choice"]
    values: list[Union[bool, int, float, str]] = Field(min_length=2)


Param = Annotated[Union[LogParam, FloatParam, IntParam, ChoiceParam], Field(discriminator="type")]
_SPACE = TypeAdapter(dict[str, Param])


class Program(BaseModel):
    """A parsed program: its name, full text, search space (maybe empty), the constraints its
    points must satisfy (expressions over train.py's constants) and adopt hint."""
    name: str
    text: str
    source: str = "<text>"
    search_space: dict[str, Param] = Field(default_factory=dict)
    constraints: list[str] = Field(default_factory=list)
    adopt: Literal["always", "if-better", "never"] | None = None
    _checks: tuple[Constraint, ...] | None = PrivateAttr(default=None)

    def checks(self) -> tuple[Constraint, ...]:
        """The constraints, parsed (once). Raises ProgramError for one that is not valid."""
        if self._checks is None:
            try:
                self._checks = tuple(parse_constraint(c) for c in self.constraints)
            except ConstraintError as e:
                raise ProgramError(f"{self.source}: constraints: {e}") from None
        return self._checks

    def constraint_names(self) -> frozenset[str]:
        """Every constant a constraint reads (in the search space or not)."""
        return frozenset().union(*(c.names for c in self.checks()))

    def violated(self, values: dict) -> str | None:
        """The text of the first constraint `values` (constant name -> value) break, else None; a
        constraint naming a constant `values` lack holds (train.py has none: nothing to check)."""
        c = violated(self.checks(), values)
        return None if c is None else c.text


class ProgramSpec(BaseModel):
    """A program as the coordinator hands it to an agent it moves (coordinator/decide/allocation.py):
    its text, backend spec and adopt rule; its weight (the allocation's prior) and whether the
    user pinned it (its agents are never moved)."""
    model_config = ConfigDict(extra="forbid")
    name: str
    text: str
    backend: dict = Field(default_factory=lambda: {"type": "mutate"})
    adopt: Literal["always", "if-better", "never"] | None = None
    weight: float = Field(default=1.0, gt=0)
    pinned: bool = False


def parse_program(text: str, name: str, source: str = "<text>") -> Program:
    """Parse a program's text. Raises ProgramError naming `source` and the offending key."""
    space: dict = {}
    constraints: list = []
    adopt = None
    for m in _YAML_BLOCK.finditer(text):
        try:
            data = yaml.safe_load(m.group(1))
        except yaml.YAMLError as e:
            raise ProgramError(f"{source}: yaml block: {str(e).splitlines()[0]}") from None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ProgramError(f"{source}: yaml block: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {"search_space", "adopt", "constraints"}
        if unknown:
            raise ProgramError(f"{source}: yaml block: unknown key {sorted(unknown)[0]!r} "
                               "(expected search_space, constraints, adopt)")
        if "adopt" in data:
            if data["adopt"] not in ("always", "if-better", "never"):
                raise ProgramError(f"{source}: adopt: {data['adopt']!r} is not one of "
                                   "always, if-better, never")
            adopt = data["adopt"]
        raw = data.get("search_space") or {}
        if not isinstance(raw, dict):
            raise ProgramError(f"{source}: search_space: expected a mapping of NAME: {{type: ...}}")
        for key in raw:
            if not isinstance(key, str) or not CONSTANT_NAME.match(key):
                raise ProgramError(f"{source}: search_space.{key}: not an UPPER_CASE constant name")
        try:
            space.update(_SPACE.validate_python(raw))
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"] if str(x) not in ("log", "float", "int", "choice"))
            raise ProgramError(f"{source}: search_space.{loc}: {err['msg']}") from None
        raw = data.get("constraints") or []
        if not isinstance(raw, list):
            raise ProgramError(f"{source}: constraints: expected a list of expressions such as "
                               "'MODEL_DIM % HEAD_DIM == 0'")
        constraints += raw
    prog = Program(name=name, text=text, source=source, search_space=space, constraints=constraints,
                   adopt=adopt)
    prog.checks()   # raises ProgramError naming the constraint that is not valid
    return prog


def load_program(path: Path | str, name: str | None = None) -> Program:
    """Read and parse a program file. Raises ProgramError when it is missing or malformed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProgramError(f"{p}: cannot read program: {e.__class__.__name__}") from None
    return parse_program(text, name or p.stem, str(p))

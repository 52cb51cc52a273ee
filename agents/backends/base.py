"""The proposal-backend interface, the context a backend sees, and the backend registry.

Built-in backends (mutate, litellm, command) register through `register_backend` exactly as a
user's own backend would; `make_backend(spec)` builds one from its config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from pydantic import BaseModel
from agents.messages import Decision, ExperimentRecord

from agents.edits import EDITABLE, apply_edit, diff_bytes, parse_edit, validate_source
from agents.errors import AgentError, InvalidEdit
from agents.program import Program


@dataclass
class ProposalContext:
    """Everything a backend may look at. Sizes are bounded by the prompt builder."""
    program: Program
    source: str                                   # the current train.py
    base_commit: str
    agent: str
    seed: int = 0
    own_recent: list[ExperimentRecord] = field(default_factory=list)
    swarm_recent: list[tuple[ExperimentRecord, Decision | None]] = field(default_factory=list)
    worktree: Path | None = None                  # where a command backend runs
    state_dir: Path | None = None                 # scratch space (prompt files)
    in_flight: str | None = None                  # the idea training right now, if any
    max_prompt_chars: int = 60_000


@dataclass
class Proposal:
    """A backend's answer: raw output to parse (`text`) or a whole file (`new_source`), plus
    accounting. `error` set means the backend could not produce an edit: recorded invalid."""
    description: str = ""
    text: str | bytes | None = None
    new_source: str | None = None
    touched: list[str] = field(default_factory=list)   # files changed besides the editable one
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    base: str | None = None                            # commit it was prepared against
    # What was asked and answered (prompt, raw answer, parse result, tokens, duration), kept
    # in runs/<id>/proposal.json after redaction; None for backends with nothing to show.
    transcript: dict | None = None

    def resolve(self, source: str, *, max_edit_bytes: int, max_file_bytes: int) -> tuple[str, str]:
        """(new train.py, description). Raises InvalidEdit with the reason to record."""
        if self.error:
            raise InvalidEdit(self.error)
        if self.touched:
            raise InvalidEdit(f"edit touches {self.touched[0]!r}; only {EDITABLE} may be changed")
        description = self.description
        if self.new_source is not None:
            new = self.new_source
            size = diff_bytes(source, new)
            if size > max_edit_bytes:
                raise InvalidEdit(f"edit is {size} bytes, over the limit of {max_edit_bytes}")
        elif self.text is not None:
            parsed = parse_edit(self.text)
            new = apply_edit(parsed, source, max_edit_bytes=max_edit_bytes)
            description = description or parsed.description
        else:
            raise InvalidEdit("backend returned no edit")
        validate_source(new, source, max_file_bytes=max_file_bytes)
        description = " ".join((description or "unnamed edit").split())[:200]
        return new, description


@runtime_checkable
class Backend(Protocol):
    """A proposal backend. `propose` and `fix` must not raise for a bad answer: they return a
    Proposal with `error` set (recorded invalid). When there is no answer at all they raise a
    BackendError: BackendUnavailable (down, timed out: the agent waits and asks again, no
    record), BackendRefused (asking again cannot help: the agent stops), ProposalAbandoned
    (after an optional `cancel()`). SpendingCapReached stops the agent cleanly. An optional
    `preflight()` checks the backend once before the swarm starts (raises BackendError)."""
    name: str

    def propose(self, ctx: ProposalContext) -> Proposal: ...

    def fix(self, ctx: ProposalContext, log_tail: str) -> Proposal: ...


class UnknownBackend(AgentError):
    """No backend is registered under that type name."""


_REGISTRY: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Register `factory(spec, *, seed: int, agent: str) -> Backend` under `name` (the spec's
    `type`). Registering a name again replaces it."""
    _REGISTRY[name] = factory


def make_backend(spec: BaseModel | dict[str, Any], *, seed: int = 0, agent: str = "") -> Backend:
    """Build the backend a spec names. Raises UnknownBackend for an unregistered type."""
    _load_builtins()
    kind = spec.get("type") if isinstance(spec, dict) else getattr(spec, "type", None)
    if kind not in _REGISTRY:
        raise UnknownBackend(f"backend type {kind!r} is not registered "
                             f"(known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[kind](spec, seed=seed, agent=agent)


def _load_builtins() -> None:
    # Imported lazily: the litellm module must not import litellm itself until it is used.
    from agents.backends import command, llm, mutate  # noqa: F401


def replace(p: Proposal, **kw) -> Proposal:
    return dataclasses.replace(p, **kw)

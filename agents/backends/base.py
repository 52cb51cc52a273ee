"""The proposal-backend interface, the context a backend sees, and the backend registry.

A backend is registered with its config model in one call, the same for a built-in one and a
user's own::

    class EchoSpec(BaseModel):
        model_config = ConfigDict(extra="forbid")
        type: Literal["echo"] = "echo"       # the name swarm.yaml's `backend: {type: ...}` uses
        text: str

    register_backend("echo", EchoBackend, EchoSpec)   # EchoBackend(spec, *, seed, agent)

- `register_backend(name, factory, config)`: `factory(spec, *, seed: int, agent: str)` (a class
  or a function) returns a Backend; `config` is a pydantic model with a `type` field.
  Registering a name again replaces it.
- `BackendSpec`: the pydantic type of a `backend:` field (swarm.yaml, AgentConfig). It
  validates a mapping against the model registered under its `type`; an unknown type is a
  one-line error listing the known ones.
- `make_backend(spec, seed=, agent=)`: builds the backend a spec (model or mapping) names.
- `backend_types()`: name -> registered BackendType.

Where registrations come from (loaded once, on first use of the registry): every module of
the `agents.backends` package (the built-ins: a new built-in is one module that calls
register_backend), then every entry point of the group `autoresearch_swarm.backends` (a
user's package declares `[project.entry-points."autoresearch_swarm.backends"]
echo = "my_pkg.echo"`; loading the entry point imports the module, which calls
register_backend). A plugin that fails to load is logged and skipped.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
import pkgutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Protocol, runtime_checkable

from pydantic import BaseModel, PlainSerializer, PlainValidator
from pydantic_core import PydanticCustomError

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
    # With `error`: nothing is left to propose from this train.py (every nearby state tried); a
    # new best may give the backend more (the agent waits for one rather than stop: agent.py).
    spent: bool = False
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


ENTRY_POINT_GROUP = "autoresearch_swarm.backends"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendType:
    """One registered backend: its `type` name, what builds it, and its config model."""
    name: str
    factory: Callable[..., Backend]
    config: type[BaseModel]


_REGISTRY: dict[str, BackendType] = {}
_loaded = False
_loading = False
_load_lock = threading.RLock()   # re-entered when a plugin asks the registry while it loads


def register_backend(name: str, factory: Callable[..., Backend], config: type[BaseModel]) -> None:
    """Register `factory(spec, *, seed: int, agent: str) -> Backend` under `name`, with the
    pydantic model its `backend:` mapping validates against. Raises TypeError when the model
    has no `type` field."""
    if not (isinstance(config, type) and issubclass(config, BaseModel)) or "type" not in config.model_fields:
        raise TypeError(f"backend {name!r}: config must be a pydantic model with a `type` field")
    _REGISTRY[name] = BackendType(name, factory, config)


def backend_types() -> dict[str, BackendType]:
    """Every registered backend by name (built-ins and entry points loaded on first call)."""
    _load()
    return dict(_REGISTRY)


def backend_config(value: Any) -> BaseModel:
    """`value` (a mapping with `type`, or a config model) validated against the model of its
    type. Raises pydantic's ValidationError (nested keys keep their location)."""
    types = backend_types()
    if isinstance(value, BaseModel):
        kind = getattr(value, "type", None)
        if kind in types and isinstance(value, types[kind].config):
            return value
        value = value.model_dump()
    if not isinstance(value, dict):
        raise PydanticCustomError("backend_spec", "a backend is a mapping with a `type` key")
    kind = value.get("type")
    if kind is None:
        raise PydanticCustomError("backend_type", "a backend needs a `type` (known: {known})",
                                  {"known": ", ".join(sorted(types))})
    if kind not in types:
        raise PydanticCustomError("backend_type", "unknown backend type {kind} (known: {known})",
                                  {"kind": repr(kind), "known": ", ".join(sorted(types))})
    return types[kind].config.model_validate(value)


# The type of a `backend:` field: validated through the registry, dumped as its own model.
BackendSpec = Annotated[BaseModel, PlainValidator(backend_config),
                        PlainSerializer(lambda m, info: m.model_dump(mode=info.mode), return_type=dict)]


def make_backend(spec: BaseModel | dict[str, Any], *, seed: int = 0, agent: str = "") -> Backend:
    """Build the backend a spec names. Raises UnknownBackend for an unregistered type and
    pydantic's ValidationError for a bad mapping."""
    kind = spec.get("type") if isinstance(spec, dict) else getattr(spec, "type", None)
    types = backend_types()
    if kind not in types:
        raise UnknownBackend(f"backend type {kind!r} is not registered "
                             f"(known: {', '.join(sorted(types))})")
    return types[kind].factory(backend_config(spec), seed=seed, agent=agent)


def _load() -> None:
    global _loaded, _loading
    if _loaded:
        return
    with _load_lock:   # other threads wait here; the loading thread re-enters and returns
        if _loaded or _loading:
            return
        _loading = True
        try:
            # Built-ins: every module of this package (imported here, not at package import:
            # the litellm module must not import litellm itself until it is used).
            import agents.backends as pkg
            for mod in pkgutil.iter_modules(pkg.__path__):
                if mod.name != "base":
                    importlib.import_module(f"{pkg.__name__}.{mod.name}")
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                try:
                    ep.load()
                except Exception as e:  # a broken plugin must not take the built-ins down
                    log.warning("backend plugin %s (%s) failed to load: %s: %s",
                                ep.name, ep.value, type(e).__name__, e)
            _loaded = True
        finally:
            _loading = False

"""swarm.yaml: the user's configuration as pydantic models, loading, ${ENV} expansion, checks.

The models live here, not in trainer/schema.py, because only the CLI and `swarm run` read them;
agents receive their own AgentConfig built from these. Every level forbids unknown keys so a
typo is an error that names the file and the dotted key.
"""
from __future__ import annotations

import difflib
import importlib.resources
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.backends.auto import resolve_auto
from agents.backends.base import BackendSpec, backend_config, backend_types
from agents.messages import PromotionConfig
from coordinator.decide.allocation import AllocationConfig
from coordinator.track.config import TrackingConfig

DEFAULT_CONFIG_NAME = "swarm.default.yaml"
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ONLY_ENV_RE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
# Keys whose value is a secret: they may only be written as ${ENV_VAR}.
SECRET_KEY_RE = re.compile(r"(api_?key|token|password|secret)$", re.IGNORECASE)


class ConfigError(ValueError):
    """The configuration is wrong; the message is one line naming the file and the key."""


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProgramEntry(_Cfg):
    name: str | None = None                 # a shipped program: programs/<name>.md
    path: str | None = None                 # or a file, relative to swarm.yaml
    weight: float = Field(default=1.0, gt=0)
    backend: BackendSpec | None = None      # None: the top-level `backend`
    adopt: str | None = None                # None: the program's own suggestion
    pin: bool = False                       # adaptive allocation never moves its agents

    def label(self) -> str:
        return self.name or Path(self.path or "").stem


class AgentsConfig(_Cfg):
    count: int | Literal["per-gpu", "auto"] = "auto"
    gpus: int | None = Field(default=None, ge=0)    # GPUs to use (one agent each); None: all
    cpus_per_agent: int = Field(default=1, ge=1)
    # A custom Ray resource each agent also takes one unit of: only nodes that offer it run
    # agents (e.g. `ray start --resources='{"swarm_agent": 4}'`). None: GPU/CPU requests only.
    resource: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")

    @field_validator("count")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1")
        return v


class DataConfig(_Cfg):
    source: str = "auto"                    # auto | bundled | climbmix | tinystories | local:PATH
    dir: str | None = None                  # None: $SWARM_DATA_DIR or the trainer's default


class RedisConfig(_Cfg):
    url: str | None = None                  # None: an embedded redis-server under SWARM_HOME


class RayConfig(_Cfg):
    address: str | None = None              # None: a private local Ray; "auto": the cluster's


class SwarmConfig(_Cfg):
    swarm_home: str | None = None           # None: $SWARM_HOME or ./.swarm
    budget: float | None = Field(default=None, gt=0)   # seconds of training; None: profile's
    profile: Literal["auto", "cpu", "gpu", "cpu-smoke"] = "auto"
    seed: int = 0
    data: DataConfig = DataConfig()
    agents: AgentsConfig = AgentsConfig()
    # any registered backend type (agents/backends/base.py): built-ins and plugins
    backend: BackendSpec = Field(default_factory=lambda: backend_config({"type": "auto"}))
    programs: list[ProgramEntry] = Field(default_factory=list)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    redis: RedisConfig = RedisConfig()
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig()   # MLflow / W&B (coordinator/track)
    # static: agents keep the program they started on; adaptive: coordinator/decide/allocation.py
    allocation: AllocationConfig = Field(default_factory=AllocationConfig)

    @field_validator("programs")
    @classmethod
    def _need_programs(cls, v):
        if not v:
            raise ValueError("at least one program is needed")
        for i, p in enumerate(v):
            if (p.name is None) == (p.path is None):
                raise ValueError(f"entry {i} needs exactly one of name or path")
        return v


# --- loading -------------------------------------------------------------------------------

def _dotted(loc) -> str:
    return ".".join(str(x) for x in loc)


def _expand(value: Any, loc: tuple, source: str, env: dict[str, str]) -> Any:
    """Expand ${VAR} (and ${VAR:-default}) in strings; refuse secrets written in clear."""
    if isinstance(value, dict):
        return {k: _expand(v, loc + (k,), source, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, loc + (i,), source, env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    key = str(loc[-1]) if loc else ""
    if SECRET_KEY_RE.search(key) and not key.endswith("_env") and not ONLY_ENV_RE.match(value):
        raise ConfigError(f"{source}: {_dotted(loc)}: a secret may only be given as ${{ENV_VAR}}")
    if key == "url" or key.endswith(("_url", "_uri")):
        pw = urlsplit(value).password if "://" in value else None
        if pw and not ONLY_ENV_RE.match(pw):
            raise ConfigError(f"{source}: {_dotted(loc)}: the password in a URL may only be "
                              f"given as ${{ENV_VAR}}")

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{source}: {_dotted(loc)}: environment variable {name} is not set")

    return ENV_RE.sub(sub, value)


def parse_config(data: Any, source: str = "swarm.yaml",
                 env: dict[str, str] | None = None) -> SwarmConfig:
    """Validate a mapping as a SwarmConfig. Raises ConfigError (one line)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    data = _expand(data, (), source, dict(os.environ) if env is None else env)
    try:
        return SwarmConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {validation_message(e, data)}") from None


# Union members pydantic names in an error's location (agents.count: int | "per-gpu" | "auto").
_TAGS = ("int", "str", "float", "bool")


def validation_message(e: ValidationError, data: Any = None) -> str:
    """`dotted.key: what is wrong` for the most telling error (unknown keys first). With the
    validated `data`, an unknown key also gets the valid keys and the closest one."""
    errs = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")

    def loc_of(err) -> str:
        return _dotted(x for x in err["loc"]
                       if not (isinstance(x, str) and (x in _TAGS or x.startswith("literal["))))

    first = errs[0]
    where = loc_of(first) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key{_valid_keys(first['loc'], data)}"
    # a union (int | "auto") fails once per member: say all of it in one line
    msgs = list(dict.fromkeys(err["msg"].removeprefix("Value error, ")
                              for err in errs if loc_of(err) == loc_of(first)))
    return f"{where}: {' or '.join(msgs)}"


def _model_at(loc, data: Any) -> type[BaseModel] | None:
    """The config model that holds the key at `loc` (pydantic's error location: keys, list
    indexes, union tags), walking `data` alongside: a `backend:` mapping's model is the one its
    `type` registered."""
    import typing

    def models_in(tp) -> list[type[BaseModel]]:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [tp]
        return [m for a in typing.get_args(tp) for m in models_in(a)]

    model: type[BaseModel] = SwarmConfig
    for part in list(loc)[:-1]:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
            continue
        if part not in model.model_fields:
            continue   # a union member's tag in the location
        data = data.get(part) if isinstance(data, dict) else None
        found = [m for m in models_in(model.model_fields[part].annotation) if m is not BaseModel]
        if len(found) == 1:
            model = found[0]
        elif isinstance(data, dict) and data.get("type") in backend_types():
            model = backend_types()[data["type"]].config
        else:
            return None
    return model


def _valid_keys(loc, data: Any) -> str:
    """` (did you mean 'count'? valid keys: ...)` for an unknown key, when the model is known."""
    model = _model_at(loc, data)
    if model is None:
        return ""
    keys = list(model.model_fields)
    typed = str(loc[-1])
    # a shortened key (cpus for cpus_per_agent) before a similar-looking one (gpus)
    close = [k for k in keys if k.startswith(typed)][:1] or difflib.get_close_matches(typed, keys, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f" ({hint}valid keys: {', '.join(keys)})"


def default_config_text() -> str:
    return (importlib.resources.files("coordinator.run") / DEFAULT_CONFIG_NAME).read_text()


def merge_over(base: Any, over: Any) -> Any:
    """`over` (a user's file) merged over `base` (the shipped defaults): mappings key by key,
    recursively; anything else replaces what it is written over, lists as a whole (a user's
    `programs:` is the list of programs, not an addition to the six shipped ones) and `null`
    too. A mapping whose `type` differs from the default's (a backend) replaces it whole: the
    keys of one backend type mean nothing to another."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    if "type" in over and base.get("type") != over.get("type"):
        return over
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_over(base[k], v) if k in base else v
    return out


def load_config(path: Path | None, env: dict[str, str] | None = None) -> tuple[SwarmConfig, Path]:
    """Load `path` merged over the shipped default (see merge_over), or the default alone when
    None. Returns the config and the directory relative program paths are resolved against.
    Raises ConfigError naming `path` as given (the file actually read)."""
    defaults = yaml.safe_load(default_config_text())
    if path is None:
        return parse_config(defaults, DEFAULT_CONFIG_NAME, env), Path.cwd()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return parse_config(merge_over(defaults, data or {}), str(path), env), path.parent.resolve()


# --- programs and backends -----------------------------------------------------------------

def shipped_programs_dir() -> Path:
    return Path(str(importlib.resources.files("programs")))


def resolve_program(entry: ProgramEntry, base: Path, source: str = "swarm.yaml",
                    index: int = 0) -> Path:
    """The program file an entry names; raises ConfigError when it does not exist."""
    if entry.name is not None:
        p = shipped_programs_dir() / f"{entry.name}.md"
        if not p.is_file():
            known = ", ".join(sorted(x.stem for x in shipped_programs_dir().glob("*.md")))
            raise ConfigError(f"{source}: programs.{index}.name: no program {entry.name!r} "
                              f"(shipped: {known})")
        return p
    p = Path(entry.path).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise ConfigError(f"{source}: programs.{index}.path: program file {p} does not exist")
    return p.resolve()


def resolve_backend(backend, env: dict[str, str] | None = None, program=None,
                    local: bool = True) -> dict:
    """The concrete backend (as a dict for AgentConfig): `auto` becomes litellm, optuna (for
    `program`, on one node) or mutate (see agents.backends.auto)."""
    if backend.type != "auto":
        return backend.model_dump(exclude_none=True)
    return resolve_auto(env, program, local)


def assign_programs(programs: list[ProgramEntry], n_agents: int) -> list[int]:
    """Deterministic weighted assignment: agent i gets the entry furthest below its share.

    With weights 2:1:1 and 4 agents this gives [0, 1, 2, 0]: every program gets an agent
    before any gets a second, as long as there are agents enough.
    """
    if not programs:
        raise ConfigError("programs: at least one program is needed")
    total = sum(p.weight for p in programs)
    counts = [0] * len(programs)
    out = []
    for i in range(n_agents):
        # deficit = ideal share so far minus what it got; ties go to the earlier entry
        j = max(range(len(programs)),
                key=lambda k: ((i + 1) * programs[k].weight / total - counts[k], -k))
        counts[j] += 1
        out.append(j)
    return out

"""`auto`: litellm when an LLM provider key is in the environment (see AUTO_LLM); else optuna
(TPE) for a program whose search space Optuna can express in a swarm on one node, which beat
mutate on bench/search.py (README); else mutate.

`swarm run` resolves it once per agent (resolve_auto) so each record names the real backend;
built directly (no program known), it resolves against the agent's own environment, without
optuna.
"""
from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agents.backends.base import Backend, make_backend, register_backend

# The LLM provider keys `auto` looks for, in order, with the model it then uses.
AUTO_LLM = (
    ("ANTHROPIC_API_KEY", "anthropic/claude-sonnet-4-5"),
    ("OPENAI_API_KEY", "openai/gpt-4.1"),
)


class AutoSpec(BaseModel):
    """litellm when an LLM key is in the environment (see AUTO_LLM), else mutate."""
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto"] = "auto"


def resolve_auto(env: dict[str, str] | None = None, program=None, local: bool = True) -> dict:
    """The concrete backend `auto` stands for, as a mapping (the key's name, never its value).
    Without a key: optuna when `program` (an agents.program.Program) declares a search space
    Optuna can express and the swarm is `local` (one node: `swarm run` hands the study's redis
    URL only to its own node's agents), else mutate."""
    env = dict(os.environ) if env is None else env
    for var, model in AUTO_LLM:
        if env.get(var):
            return {"type": "litellm", "model": model, "api_key_env": var}
    if program is not None and local:
        from agents.backends.optuna_study import check_space
        from agents.errors import ProgramError

        try:
            check_space(program)
            return {"type": "optuna"}
        except ProgramError:
            pass
    return {"type": "mutate"}


def _build(spec: AutoSpec, *, seed: int = 0, agent: str = "") -> Backend:
    return make_backend(resolve_auto(), seed=seed, agent=agent)


register_backend("auto", _build, AutoSpec)

"""`auto`: litellm when an LLM provider key is in the environment (see AUTO_LLM), else mutate.

`swarm run` resolves it once per agent (resolve_auto) so each record names the real backend;
built directly, it resolves against the agent's own environment.
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


def resolve_auto(env: dict[str, str] | None = None) -> dict:
    """The concrete backend `auto` stands for, as a mapping (the key's name, never its value)."""
    env = dict(os.environ) if env is None else env
    for var, model in AUTO_LLM:
        if env.get(var):
            return {"type": "litellm", "model": model, "api_key_env": var}
    return {"type": "mutate"}


def _build(spec: AutoSpec, *, seed: int = 0, agent: str = "") -> Backend:
    return make_backend(resolve_auto(), seed=seed, agent=agent)


register_backend("auto", _build, AutoSpec)

"""`auto`: litellm when an LLM provider key is in the environment (see AUTO_LLM); else optuna
(TPE, `start: best`) for a program whose search space Optuna can express in a swarm on one
node; else mutate.

Why optuna (TPE from best) without a key, measured with bench/search.py (8 agents, 6 seeds; the
README's "optuna against mutate"): on the landscape fitted to the real trainer it is level with
mutate at 96 runs (true val_bpb of the final best 2.2159 vs 2.2168) and ahead at 192 (2.2108 vs
2.2155), while the old optuna (`start: anywhere`) is behind both (2.2299, 2.2228); on the
synthetic bowls it is ahead at 96 (1.5076 vs 1.5157) and level at 192 (1.5059 vs 1.5044). The
quick start (bench/quickstart.py) moves best in 30 of 30 replays with it, in 7.1 minutes of runs
(mutate: 12 of 12, 8.3). CMA-ES from best was never ahead of TPE. On the research bench's
program mix on the real landscape (8 seeds) mutate is ahead at 96 runs (true gain 0.1365 vs
0.1278, about one standard error) and level at 192 (0.1427 vs 0.1416, TPE's sd 0.0008 against
0.0063); on its bowls TPE from best is ahead at 96 (0.1007 vs 0.0684).

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

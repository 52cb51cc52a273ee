"""Prompt text for LLM and command backends: the program, train.py, this agent's and the
swarm's recent results, and the edit format, bounded to a maximum size.

The format, with a worked example on lines that really are in the file, is in the user turn
as well as the system turn: a common server chat template drops the system role, and a model
that never saw the format answers in prose.
"""
from __future__ import annotations

import functools
import importlib.resources

from agents.messages import Decision, ExperimentRecord

from agents.backends.base import ProposalContext
from agents.edits import EDIT_FORMAT, EDITABLE, worked_example

ROLE = ("You are an autonomous ML researcher improving a small language-model training "
        f"script, {EDITABLE}. Each proposal is trained for a fixed wall-clock budget and "
        "judged by validation bits per byte (val_bpb, lower is better). Propose ONE focused, "
        "testable change per answer.")


def how_to_answer(source: str) -> str:
    """The edit format plus one worked example on `source` (the file the model will edit)."""
    example = worked_example(source)
    if example is None:
        return EDIT_FORMAT
    return (f"{EDIT_FORMAT}\n\nExample of a complete answer (it only shows the format; propose "
            f"your own change):\n\n{example}")


@functools.lru_cache(maxsize=1)
def _baseline_source() -> str:
    try:
        return (importlib.resources.files("trainer") / "baseline" / EDITABLE).read_text()
    except (OSError, ModuleNotFoundError):
        return ""


def system_prompt() -> str:
    """The system turn: the role and the format, shown on the shipped baseline train.py."""
    return f"{ROLE}\n\n{how_to_answer(_baseline_source())}"


SYSTEM = system_prompt()


def _clip(text: str, limit: int, where: str = "end") -> str:
    if len(text) <= limit:
        return text
    cut = max(0, limit - 40)
    return (text[:cut] + "\n[... truncated ...]") if where == "end" else ("[... truncated ...]\n" + text[-cut:])


def _fmt_delta(d: float | None) -> str:
    return "n/a" if d is None else f"{d:+.4f}"


def own_line(r: ExperimentRecord) -> str:
    what = r.reason if r.status != "ok" else f"val_bpb {r.val_bpb:.4f} delta {_fmt_delta(r.delta)}"
    return f"- [{r.status}] {r.description or '(no description)'}: {what}"


def swarm_line(r: ExperimentRecord, d: Decision | None) -> str:
    verdict = d.decision if d else r.status
    score = f"val_bpb {r.val_bpb:.4f} delta {_fmt_delta(r.delta)}" if r.val_bpb is not None else (r.reason or "")
    return f"- [{verdict}] ({r.program}/{r.agent}) {r.description or '(no description)'}: {score}"


def _results(ctx: ProposalContext, budget: int) -> str:
    parts = []
    if ctx.own_recent:
        parts.append("## Your recent experiments (newest first)\n"
                     + "\n".join(own_line(r) for r in ctx.own_recent))
    others = [(r, d) for r, d in ctx.swarm_recent if r.agent != ctx.agent]
    if others:
        parts.append("## Other agents' recent experiments (other programs' ideas, kept and "
                     "discarded; delta > 0 means better than its parent)\n"
                     + "\n".join(swarm_line(r, d) for r, d in others))
    if ctx.in_flight:
        parts.append(f"## Training right now (do not propose it again)\n- {ctx.in_flight}")
    return _clip("\n\n".join(parts), budget)


def _ask(source: str, what: str) -> str:
    # Last in the prompt: small models follow what they read last.
    return f"## How to answer\n{how_to_answer(source)}\n\n{what}"


def user_prompt(ctx: ProposalContext) -> str:
    """The proposal request, at most ctx.max_prompt_chars characters (train.py and the answer
    format are never cut unless they alone exceed the limit)."""
    code = f"## Current {EDITABLE} (commit {ctx.base_commit[:10]})\n```python\n{ctx.source}\n```"
    ask = _ask(ctx.source, "Propose your next experiment now, in exactly that format.")
    rest = max(2000, ctx.max_prompt_chars - len(code) - len(ask) - 400)
    program = "## Research program\n" + _clip(ctx.program.text, rest // 2)
    results = _results(ctx, rest - len(program))
    head = "\n\n".join(p for p in (ROLE, program, results) if p)
    return _clip(head, max(0, ctx.max_prompt_chars - len(code) - len(ask) - 4)) + \
        "\n\n" + code + "\n\n" + ask


def retry_prompt(error: str) -> str:
    """The follow-up turn when the answer's edit cannot be used (one retry per proposal)."""
    return (f"Your edit could not be used: {error}\n"
            f"Answer again with the whole answer in the format above: the DESCRIPTION line, then "
            f"the blocks, with every SEARCH text copied exactly from the current {EDITABLE} shown "
            f"above (or the whole new file).")


def fix_prompt(ctx: ProposalContext, log_tail: str) -> str:
    """A crash-fix request: the crashed train.py and the tail of its log."""
    tail = _clip(log_tail, 4000, where="start")
    code = f"## The {EDITABLE} that crashed\n```python\n{ctx.source}\n```"
    ask = _ask(ctx.source, "Answer with the fix now, in exactly that format.")
    text = (f"{ROLE}\n\nYour last change crashed when trained. Fix the bug while keeping the idea "
            f"({ctx.in_flight or 'unnamed'}).\n\n## Tail of the run log\n```\n{tail}\n```\n\n{code}")
    return _clip(text, max(2000, ctx.max_prompt_chars - len(ask) - 2)) + "\n\n" + ask

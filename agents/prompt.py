"""Prompt text for LLM and command backends: the program, train.py, this agent's and the
swarm's recent results, and the edit format, bounded to a maximum size."""
from __future__ import annotations

from agents.messages import Decision, ExperimentRecord

from agents.backends.base import ProposalContext
from agents.edits import EDIT_FORMAT, EDITABLE

SYSTEM = ("You are an autonomous ML researcher improving a small language-model training "
          f"script, {EDITABLE}. Each proposal is trained for a fixed wall-clock budget and "
          "judged by validation bits per byte (val_bpb, lower is better). Propose ONE focused, "
          "testable change per answer.\n\n" + EDIT_FORMAT)


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


def user_prompt(ctx: ProposalContext) -> str:
    """The proposal request, at most ctx.max_prompt_chars characters (train.py is never cut
    unless it alone exceeds the limit)."""
    code = f"## Current {EDITABLE} (commit {ctx.base_commit[:10]})\n```python\n{ctx.source}\n```"
    rest = max(2000, ctx.max_prompt_chars - len(code) - 400)
    program = "## Research program\n" + _clip(ctx.program.text, rest // 2)
    results = _results(ctx, rest - len(program))
    ask = "Propose your next experiment now."
    text = "\n\n".join(p for p in (program, results, code, ask) if p)
    return _clip(text, ctx.max_prompt_chars)


def fix_prompt(ctx: ProposalContext, log_tail: str) -> str:
    """A crash-fix request: the crashed train.py and the tail of its log."""
    tail = _clip(log_tail, 4000, where="start")
    code = f"## The {EDITABLE} that crashed\n```python\n{ctx.source}\n```"
    text = (f"Your last change crashed when trained. Fix the bug while keeping the idea "
            f"({ctx.in_flight or 'unnamed'}).\n\n## Tail of the run log\n```\n{tail}\n```\n\n{code}")
    return _clip(text, ctx.max_prompt_chars)

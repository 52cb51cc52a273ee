"""What an agent keeps of its conversations with its backend, for the person reading in the
morning: each proposal's transcript (runs/<id>/proposal.json) and the backend's events
(logs/backend-<agent>.jsonl: down, up, refused, abandoned). Secrets redacted, sizes bounded.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

# The words trainer.runner strips from the child's environment (importing it costs seconds:
# it imports torch). "PASS" and "AUTH" cover PASSWORD, PASSPHRASE, AUTH_TOKEN...
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASS", "CREDENTIAL", "AUTH")
MAX_TEXT_CHARS = 40_000        # one prompt or answer kept in a transcript (head and tail)
MAX_EVENTS_BYTES = 4_000_000   # one agent's backend event log; past it, events are dropped
_TOKENISH = re.compile(r"\b(sk-[A-Za-z0-9_-]{16,}|(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{12,})")
_MIN_SECRET = 8                # shorter env values would redact ordinary words


def secret_values(extra: list[str | None] = ()) -> list[str]:
    """Values of environment variables whose names say they are secrets, plus `extra`."""
    vals = [v for k, v in os.environ.items()
            if any(w in k.upper() for w in SECRET_WORDS) and v and len(v) >= _MIN_SECRET]
    vals += [v for v in extra if v and len(v) >= _MIN_SECRET]
    return sorted(set(vals), key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return _TOKENISH.sub("***", text)


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    half = MAX_TEXT_CHARS // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"


def clean(value: Any, secrets: list[str]) -> Any:
    """`value` with every string redacted and clipped, recursively."""
    if isinstance(value, str):
        return _clip(redact(value, secrets))
    if isinstance(value, bytes):
        return clean(value.decode("utf-8", errors="replace"), secrets)
    if isinstance(value, dict):
        return {str(k): clean(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, secrets) for v in value]
    return value


def write_json(path: Path, data: dict, secrets: list[str]) -> Path:
    """Write `data` cleaned, atomically (a reader never sees half a file)."""
    return atomic_write(path, json.dumps(clean(data, secrets), indent=1, default=str))


def keep_transcript(run_dir: Path, proposal, parse: str, *, secrets: list[str], backend: str,
                    **about: Any) -> None:
    """run_dir/proposal.json: the prompt, the raw answer, `parse` (the parse result), tokens,
    duration. Best effort: a disk problem must not lose the experiment."""
    data = dict(proposal.transcript or {"backend": backend})
    data.update(about, result=parse, description=proposal.description or None,
                prompt_tokens=proposal.prompt_tokens, completion_tokens=proposal.completion_tokens,
                cost_usd=proposal.cost_usd)
    try:
        write_json(run_dir / "proposal.json", data, secrets)
    except OSError as err:
        log.warning("transcript %s not written: %s", run_dir, err)


class BackendEvents:
    """Appends one JSON line per backend event to logs/backend-<agent>.jsonl under SWARM_HOME
    (which outlives the swarm, unlike Ray's worker logs)."""

    def __init__(self, swarm_home: Path, agent: str):
        self.path = Path(swarm_home) / "logs" / f"backend-{agent}.jsonl"
        self.agent = agent

    def add(self, kind: str, reason: str, secrets: list[str], **extra: Any) -> dict:
        event = clean({"time": time.time(), "agent": self.agent, "kind": kind,
                       "reason": reason, **extra}, secrets)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size > MAX_EVENTS_BYTES:
                return event
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event, default=str) + "\n")
        except OSError:
            pass   # the events are for reading later; research goes on without them
        return event


def read_events(swarm_home: Path) -> list[dict]:
    """Every agent's backend events, oldest first (for status and the report)."""
    out = []
    for p in sorted((Path(swarm_home) / "logs").glob("backend-*.jsonl")):
        try:
            lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return sorted(out, key=lambda e: e.get("time") or 0)

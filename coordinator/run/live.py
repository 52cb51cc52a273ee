"""What a running swarm looks like: gathered from redis (or a snapshot), drawn with rich.

`swarm run` redraws it about twice a second (or prints plain lines when stdout is not a
terminal); `swarm status` draws it once from another terminal. No Ray here.
"""
from __future__ import annotations

import json
import logging
import time

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from coordinator.state import keys

log = logging.getLogger(__name__)

HOUR = 3600.0


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def gather(client, swarm_id: str, rows: list[dict] | None = None) -> dict:
    """Agents' heartbeats, best per hardware class and throughput, as one JSON-able dict.

    `client` may be None (the morning after without redis): then only `rows` count.
    """
    agents, best = [], {}
    if client is not None:
        for name, raw in sorted(client.hgetall(keys.agents(swarm_id)).items()):
            try:
                hb = json.loads(raw)
            except (TypeError, ValueError):
                continue
            hb.setdefault("agent", _s(name))
            agents.append(hb)
        prefix = keys.best_prefix(swarm_id)
        for key in client.scan_iter(match=prefix + "*"):
            try:
                b = json.loads(client.get(key))
            except (TypeError, ValueError):
                continue
            best[_s(key)[len(prefix):]] = {"val_bpb": b.get("val_bpb"), "commit": b.get("commit"),
                                           "seq": b.get("seq")}
    rows = rows or []
    if not best:  # from the records: the latest best each class moved to
        for r in rows:
            if r.get("best_after") and r.get("decision") in ("promote", "merge", "simplification"):
                best[r["hardware_class"]] = {"val_bpb": r.get("val_bpb"), "commit": r["best_after"]}
    finished = [r["finished_at"] for r in rows if r.get("finished_at")]
    started = [r["started_at"] for r in rows if r.get("started_at")]
    span = (max(finished) - min(started)) if finished and started else 0.0
    per_hour = len(finished) / (span / HOUR) if span > 60 else None
    return {"swarm_id": swarm_id, "agents": agents, "best": best, "experiments": len(rows),
            "experiments_per_hour": per_hour,
            "kept": sum(1 for r in rows if r.get("status") == "keep"), "time": time.time()}


def _fmt(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def render(data: dict, title: str = "") -> Group:
    """One row per agent (program, idea, progress over the budget, last delta, last outcome:
    an invalid edit's reason, a backend down or refused), then the best val_bpb per hardware
    class and experiments/hour."""
    t = Table(title=title or f"swarm {data['swarm_id']}", expand=True, title_justify="left")
    for col, kw in (("agent", {}), ("program", {}), ("phase", {}),
                    ("current idea", {"ratio": 3, "overflow": "ellipsis", "no_wrap": True}),
                    ("progress", {"width": 22}), ("last delta", {"justify": "right"}),
                    ("runs", {"justify": "right"}), ("invalid", {"justify": "right"}),
                    ("last outcome", {"ratio": 3, "overflow": "ellipsis", "no_wrap": True})):
        t.add_column(col, **kw)
    for a in data["agents"]:
        p = a.get("progress")
        bar = ProgressBar(total=1.0, completed=float(p), width=20) if isinstance(p, (int, float)) else Text("-")
        d = a.get("last_delta")
        delta = Text(_fmt(d, "+.4f"), style="green" if d and d > 0 else "red" if d else "")
        t.add_row(str(a.get("agent", "?")), str(a.get("program", "")), str(a.get("phase", "")),
                  str(a.get("description") or ""), bar, delta, str(a.get("experiments", "")),
                  str((a.get("statuses") or {}).get("invalid", 0)), _outcome_text(a))
    lines = []
    for hw, b in sorted(data["best"].items()):
        lines.append(f"best [{hw}]: val_bpb {_fmt(b.get('val_bpb'))} at {str(b.get('commit') or '')[:10]}")
    if not data["best"]:
        lines.append("best: none yet (the baseline round runs first)")
    eph = data.get("experiments_per_hour")
    lines.append(f"{data['experiments']} experiments, {data.get('kept', 0)} kept, "
                 f"{_fmt(eph, '.1f')} experiments/hour")
    return Group(t, Text("\n".join(lines)))


def _outcome_text(a: dict) -> Text:
    text = str(a.get("last_outcome") or "")
    bad = a.get("backend_state") not in (None, "up") or text.startswith(("invalid", "crash", "stopped: backend"))
    return Text(text, style="red" if bad else "")


def _agent_brief(a: dict) -> str:
    out = f"{a.get('agent')}:{a.get('phase', '')}"
    invalid = (a.get("statuses") or {}).get("invalid", 0)
    if invalid:
        out += f" ({invalid} invalid)"
    if a.get("backend_state") not in (None, "up") or a.get("phase") == "stopped":
        out += f" [{str(a.get('last_outcome') or '')[:120]}]"
    return out


def plain_line(data: dict) -> str:
    """The same in one line, for logs and for a stdout that is not a terminal."""
    best = ", ".join(f"{hw} {_fmt(b.get('val_bpb'))}" for hw, b in sorted(data["best"].items())) or "none"
    busy = ", ".join(_agent_brief(a) for a in data["agents"])
    return f"[swarm] {data['experiments']} experiments, best {best}; {busy}"

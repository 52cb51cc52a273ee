"""What a running swarm looks like: gathered from redis (or a snapshot), drawn with rich.

`swarm run` redraws it about twice a second (or prints plain lines when stdout is not a
terminal); `swarm status` draws it once from another terminal. No Ray here.
"""
from __future__ import annotations

import json
import logging
import time

from rich import box
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
    # Experiments are the agents' own ideas: baseline, confirmation and verification runs are
    # jobs (counted as runs), and an invalid edit never trained.
    exps = [r for r in rows if (r.get("kind") or "experiment") == "experiment"]
    trained = [r for r in exps if r.get("run_status", r.get("status")) != "invalid"]
    finished = [r["finished_at"] for r in trained if r.get("finished_at")]
    started = [r["started_at"] for r in trained if r.get("started_at")]
    span = (max(finished) - min(started)) if finished and started else 0.0
    per_hour = len(finished) / (span / HOUR) if span > 60 else None
    moves = {r["best_after"] for r in rows if r.get("best_after")}  # each move once
    noise: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r.get("decided_at") or 0):
        if r.get("sigma") is not None and r.get("hardware_class"):
            noise[r["hardware_class"]] = {"sigma": r.get("sigma"), "dof": r.get("dof"),
                                          "margin": r.get("margin") if r.get("margin") is not None
                                          else noise.get(r["hardware_class"], {}).get("margin")}
    return {"swarm_id": swarm_id, "agents": agents, "best": best, "experiments": len(exps),
            "runs": len(rows), "experiments_per_hour": per_hour, "kept": len(moves),
            "best_moves": len(moves), "noise": noise, "lost_winners": [], "time": time.time()}


def _fmt(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def render(data: dict, title: str = "") -> Group:
    """One row per agent (program, phase, progress over the budget, last delta vs parent,
    invalid edits), each agent's current idea and last outcome (an invalid edit's reason, a
    backend down or refused) in full below the table (so 80 columns truncate nothing), then
    best, sigma, its degrees of freedom and the margin per hardware class, experiments/hour and
    the lost-winner audit."""
    # No vertical rules: with seven columns they cost 24 of the 80 columns a terminal may have.
    t = Table(title=title or f"swarm {data['swarm_id']}", title_justify="left", box=box.SIMPLE_HEAD,
              pad_edge=False, collapse_padding=True)
    names = [str(a.get("agent", "?")) for a in data["agents"]]
    t.add_column("agent", no_wrap=True, min_width=max([5, *map(len, names)]))
    for col, kw in (("program", {"no_wrap": True}), ("phase", {"no_wrap": True}),
                    ("progress", {"width": 10}), ("Δparent", {"justify": "right", "no_wrap": True}),
                    ("exps", {"justify": "right", "no_wrap": True}), ("inv", {"justify": "right", "no_wrap": True})):
        t.add_column(col, **kw)
    ideas, outcomes = [], []
    for a in data["agents"]:
        p = a.get("progress")
        bar = ProgressBar(total=1.0, completed=float(p), width=8) if isinstance(p, (int, float)) else Text("-")
        d = a.get("last_delta")
        delta = Text(_fmt(d, "+.4f"), style="green" if d and d > 0 else "red" if d else "")
        t.add_row(str(a.get("agent", "?")), str(a.get("program", "")), str(a.get("phase", "")),
                  bar, delta, str(a.get("experiments", "")),
                  str((a.get("statuses") or {}).get("invalid", 0)))
        if a.get("description"):
            ideas.append(f"{a.get('agent', '?')}: {a['description']}")
        if a.get("last_outcome"):
            outcomes.append(_outcome_text(a))
    lines = []
    if ideas:
        lines += ["current ideas:"] + [f"  {i}" for i in ideas]
    if outcomes:
        lines += ["last outcomes:"] + [f"  {o}" for o in outcomes]
    for hw, b in sorted(data["best"].items()):
        lines.append(f"best [{hw}]: val_bpb {_fmt(b.get('val_bpb'))} at {str(b.get('commit') or '')[:10]}")
        n = data.get("noise", {}).get(hw)
        if n:
            lines.append(f"  sigma {_fmt(n.get('sigma'), '.5f')} ({n.get('dof') or 0} dof), "
                         f"margin {_fmt(n.get('margin'), '.5f')}")
    if not data["best"]:
        lines.append("best: none yet (the baseline round runs first)")
    eph = data.get("experiments_per_hour")
    lines.append(f"{data['experiments']} experiments ({data.get('runs', data['experiments'])} runs "
                 f"with jobs), best moved {data.get('best_moves', data.get('kept', 0))} times, "
                 f"{_fmt(eph, '.1f')} experiments/hour")
    lost = data.get("lost_winners") or []
    lines.append(f"winners not on best: {len(lost)}" + (" (Δ vs best, + = better)" if lost else ""))
    for r in lost:
        lines.append(f"  {r['experiment_id']} {_fmt(r.get('delta'), '+.4f')} > margin "
                     f"{_fmt(r.get('margin'), '.4f')}: {r['why']}")
    return Group(t, Text("\n".join(lines)))


def _outcome_text(a: dict) -> str:
    return f"{a.get('agent', '?')}: {a.get('last_outcome')}"


def _troubles(data: dict) -> str:
    """Invalid edits and backends in trouble: events, not the clock (no 'down for N s')."""
    invalid = sum((a.get("statuses") or {}).get("invalid", 0) for a in data["agents"])
    out = f", {invalid} invalid" if invalid else ""
    for a in data["agents"]:
        if a.get("backend_state") not in (None, "up"):
            out += f"; {a.get('agent')}: backend {a['backend_state']}: {str(a.get('backend_reason'))[:120]}"
    return out


def plain_line(data: dict) -> str:
    """The same in one line, for logs and for a stdout that is not a terminal. It changes only
    when something happened (an experiment, a job, a move of best), never with the clock or
    the agents' phases, so a caller prints it only when it differs from the last one."""
    best = ", ".join(f"{hw} {_fmt(b.get('val_bpb'))}" for hw, b in sorted(data["best"].items())) or "none"
    return (f"[swarm] {data['experiments']} experiments ({data.get('runs', data['experiments'])} runs), "
            f"best {best}, moved {data.get('best_moves', 0)} times{_troubles(data)}")

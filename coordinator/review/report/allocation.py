"""The report's allocation section: each program's contribution to best (agents, credited gain,
device-hours, yield, share) and the allocation over time (agents per program, a step plot),
from the ledger's `allocation` events and records (coordinator/decide/allocation.py)."""
from __future__ import annotations

import base64
import html
import io
import json
import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)


def load_allocation(client, swarm_id: str) -> dict | None:
    """{"programs": yields, "timeline": [(t, agent, program)], "moves": [...]} or None when the
    swarm configured no allocation. The timeline starts each agent on its first record's
    program and follows its moves."""
    from coordinator.run.live import programs
    from coordinator.state.ledger import Ledger

    progs = programs(client, swarm_id)
    if not progs:
        return None
    timeline, moves, seen = [], [], set()
    for typ, _id, js in Ledger(client, swarm_id).events():
        if typ == "record":
            r = json.loads(js)
            if r["agent"] not in seen:
                seen.add(r["agent"])
                timeline.append((r.get("started_at") or 0.0, r["agent"], r["program"]))
        elif typ == "allocation":
            a = json.loads(js)
            moves.append(a)
            seen.add(a["agent"])
            timeline.append((a["at"], a["agent"], a["program"]))
    return {"programs": progs, "timeline": sorted(timeline), "moves": moves}


def timeline_png(timeline: list, colors: dict[str, str]) -> bytes:
    """Agents per program over time (hours from the first record), one step line each."""
    t0 = timeline[0][0] if timeline else 0.0
    where: dict[str, str] = {}
    names = sorted({p for _, _, p in timeline})
    xs: list[float] = []
    ys: dict[str, list[int]] = {n: [] for n in names}
    for t, agent, prog in timeline:
        where[agent] = prog
        xs.append((t - t0) / 3600.0)
        for n in names:
            ys[n].append(sum(1 for p in where.values() if p == n))
    fig, ax = plt.subplots(figsize=(8, 2.8), dpi=90)
    for n in names:
        ax.step(xs, ys[n], where="post", label=n, color=colors.get(n))
    ax.set_xlabel("hours")
    ax.set_ylabel("agents")
    ax.legend(loc="upper left", fontsize=8, ncol=min(4, len(names)) or 1)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def allocation_html(data: dict | None, colors: dict[str, str]) -> str:
    """The section (empty without an allocation)."""
    if not data:
        return ""
    mode = data["programs"][0].get("mode", "static")
    rows = "".join(
        f"<tr><td>{html.escape(p['program'])}{' (pinned)' if p.get('pinned') else ''}</td>"
        f"<td>{p['agents']}</td><td>{p['credit']:.4f}</td><td>{p['hours']:.2f}</td>"
        f"<td>{p['yield_']:.4f} ± {p['sd']:.4f}</td><td>{p['share'] * 100:.0f}%</td></tr>"
        for p in data["programs"])
    moves = "".join(f"<li>{html.escape(m['agent'])}: {html.escape(m['previous'])} → "
                    f"{html.escape(m['program'])}: {html.escape(m['reason'])}</li>"
                    for m in data["moves"][-50:])
    try:
        png = base64.b64encode(timeline_png(data["timeline"], colors)).decode()
        img = f'<img alt="allocation over time" src="data:image/png;base64,{png}">'
    except Exception as e:  # the table still says what happened
        log.warning("no allocation plot: %s", e)
        img = ""
    return (f"<h2>Allocation ({html.escape(mode)})</h2>\n<p class=\"note\">Each program's contribution "
            "to best: the gain of the moves of best its results made (a pool's split between its "
            "results), over the device-hours of its runs.</p>\n<table><tr><th>program</th><th>agents "
            "now</th><th>gain to best (bpb)</th><th>device-hours</th><th>yield (bpb/device-h)</th>"
            f"<th>share</th></tr>{rows}</table>\n{img}\n"
            f"<p>{len(data['moves'])} reassignment(s){' (the last 50):' if len(data['moves']) > 50 else ''}"
            f"</p><ul>{moves}</ul>\n")

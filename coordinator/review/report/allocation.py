"""The report's allocation section: each program's contribution to best (agents, credited gain,
device-hours, yield, share) and the allocation over time (agents per program, stacked),
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

from coordinator.review.report.plot import time_unit  # noqa: E402
from coordinator.state.figures import plural  # noqa: E402

log = logging.getLogger(__name__)


def load_allocation(client, swarm_id: str) -> dict | None:
    """{"programs": yields, "timeline": [(t, agent, program)], "moves": [...], "end": t} or None
    when the swarm configured no allocation. The timeline starts each agent on its first record's
    program and follows its moves; `end` is the last record's end (the plot runs to it)."""
    from coordinator.run.live import programs
    from coordinator.state.ledger import Ledger

    progs = programs(client, swarm_id)
    if not progs:
        return None
    timeline, moves, seen, end = [], [], set(), 0.0
    for typ, _id, js in Ledger(client, swarm_id).events():
        if typ == "record":
            r = json.loads(js)
            end = max(end, r.get("finished_at") or 0.0)
            if r["agent"] not in seen:
                seen.add(r["agent"])
                timeline.append((r.get("started_at") or 0.0, r["agent"], r["program"]))
        elif typ == "allocation":
            a = json.loads(js)
            moves.append(a)
            seen.add(a["agent"])
            timeline.append((a["at"], a["agent"], a["program"]))
    return {"programs": progs, "timeline": sorted(timeline), "moves": moves, "end": end}


def timeline_steps(timeline: list, end: float | None = None
                   ) -> tuple[str, list[float], dict[str, list[int]]]:
    """(unit, xs, agents per program at each x): a step at every event of the timeline, from the
    first one, and a last point at `end` (the swarm's last record: without it the plot stopped at
    the last event, 0.00016 hours into a 7-minute swarm nobody was moved in), in the progress
    plot's unit (minutes under two hours, else hours)."""
    t0 = timeline[0][0] if timeline else 0.0
    last = max([end or t0] + [t for t, _, _ in timeline])
    unit, per = time_unit(last - t0)
    where: dict[str, str] = {}
    names = sorted({p for _, _, p in timeline})
    xs: list[float] = []
    ys: dict[str, list[int]] = {n: [] for n in names}
    for t, agent, prog in timeline:
        where[agent] = prog
        xs.append((t - t0) / per)
        for n in names:
            ys[n].append(sum(1 for p in where.values() if p == n))
    if timeline and end is not None and end > timeline[-1][0]:
        xs.append((end - t0) / per)
        for n in names:
            ys[n].append(ys[n][-1])
    return unit, xs, ys


def timeline_png(timeline: list, colors: dict[str, str], end: float | None = None) -> bytes:
    """Agents per program over time (from the first record to `end`), stacked."""
    unit, xs, ys = timeline_steps(timeline, end)
    fig, ax = plt.subplots(figsize=(8, 2.8), dpi=90)
    # stacked bands (the agents of each program on those below it): step lines of two programs
    # with as many agents each hid one another
    below = [0] * len(xs)
    for n, counts in ys.items():
        top = [b + c for b, c in zip(below, counts)]
        ax.fill_between(xs, below, top, step="post", label=n, color=colors.get(n), alpha=0.8, linewidth=0)
        below = top
    ax.set_xlabel(f"{unit} since the first run")
    ax.set_ylabel("agents (stacked)")
    ax.legend(loc="upper left", fontsize=8, ncol=min(4, len(ys)) or 1)
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
        png = base64.b64encode(timeline_png(data["timeline"], colors, data.get("end"))).decode()
        img = f'<img alt="allocation over time" src="data:image/png;base64,{png}">'
    except Exception as e:  # the table still says what happened
        log.warning("no allocation plot: %s", e)
        img = ""
    return (f"<h2>Allocation ({html.escape(mode)})</h2>\n<p class=\"note\">Each program's contribution "
            "to best: the gain of the moves of best its results made (a pool's split between its "
            "results), over the device-hours of its runs.</p>\n<table class='stats' id='allocation-table'>"
            "<tr><th>program</th><th>agents now</th><th>gain to best (bpb)</th><th>device-hours</th>"
            "<th>yield (bpb/device-h)</th>"
            f"<th>share</th></tr>{rows}</table>\n{img}\n"
            f"<p>{plural(len(data['moves']), 'reassignment')}{' (the last 50):' if len(data['moves']) > 50 else ''}"
            f"</p><ul>{moves}</ul>\n")

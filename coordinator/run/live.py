"""What a running swarm looks like: gathered from redis (or a snapshot), drawn with rich.

`swarm run` redraws it about twice a second (or prints plain lines when stdout is not a
terminal) and ends with `summary()`, a few sentences on what happened; `swarm status` draws it
once from another terminal. Every figure comes from coordinator/state/figures.py. No Ray here.
"""
from __future__ import annotations

import json
import logging
import math
import time

from rich import box
from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from coordinator.decide.allocation import INERT_SURE
from coordinator.state import figures, keys

log = logging.getLogger(__name__)

# Phases in which an agent's description is an idea in flight (not one that already ran).
ACTIVE = ("train", "fix", "report")


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def published(client, swarm_id: str) -> dict[str, dict]:
    """hardware class -> the latest-best key the coordinator writes ({'commit', 'val_bpb',
    'samples', 'seq'}); {} without redis."""
    out: dict[str, dict] = {}
    if client is None:
        return out
    prefix = keys.best_prefix(swarm_id)
    for key in client.scan_iter(match=prefix + "*"):
        try:
            b = json.loads(client.get(key))
        except (TypeError, ValueError):
            continue
        v = {k: b.get(k) for k in ("commit", "val_bpb", "samples", "seq")}
        if isinstance(v["val_bpb"], float) and math.isnan(v["val_bpb"]):
            v["val_bpb"] = None   # a best with no sample yet (bestkey.py writes NaN)
        out[_s(key)[len(prefix):]] = v
    return out


def _agents(client, swarm_id: str) -> list[dict]:
    agents = []
    if client is None:
        return agents
    for name, raw in sorted(client.hgetall(keys.agents(swarm_id)).items()):
        try:
            hb = json.loads(raw)
        except (TypeError, ValueError):
            continue
        hb.setdefault("agent", _s(name))
        agents.append(hb)
    return agents


# swarm id -> (the allocation spec's JSON, its Allocation): followed incrementally between
# redraws (a fresh one reads the whole ledger).
_allocs: dict[str, tuple[bytes, object]] = {}


def programs(client, swarm_id: str) -> list[dict]:
    """Each program's agents, yield (bpb of best's gain per device-hour, with its sd) and share
    of device-hours (coordinator/decide/allocation.py), when `swarm run` configured the
    allocation; [] otherwise or without redis."""
    if client is None:
        return []
    from coordinator.decide.allocation import Allocation, AllocationSpec
    from coordinator.state.ledger import Ledger

    try:
        raw = client.get(keys.allocation_spec(swarm_id))
        if not raw:
            return []
        cached = _allocs.get(swarm_id)
        if cached is None or cached[0] != raw:
            cached = (raw, Allocation(Ledger(client, swarm_id), AllocationSpec.model_validate_json(raw)))
            _allocs[swarm_id] = cached
        alloc = cached[1]
        alloc.ledger = Ledger(client, swarm_id)  # the caller's connection (a new one each time)
        return [{**y.model_dump(), "mode": alloc.cfg.mode} for y in alloc.yields()]
    except Exception as e:  # the live view must never stop on it
        log.debug("program yields unavailable: %s", e)
        return []


def program_lines(progs: list[dict]) -> list[str]:
    """`programs (adaptive): optimizer 3 agents, yield 0.0123±0.0040 bpb/device-h, 41% of device-hours`."""
    if not progs:
        return []
    # too few agents for the floors (decide/allocation.Allocation.floor): said once, in the header
    turns = (f"; too few agents for the floors, so the programs take turns: {progs[0]['floor']:.2g} of an "
             "agent each") if progs[0].get("turns") else ""
    out = [f"programs ({progs[0].get('mode', 'static')} allocation; yield = best's gain per device-hour{turns}):"]
    # programs no agent ever ran (fewer agents than programs): one line, not a row of zeros each
    idle = [p["program"] for p in progs
            if not p["agents"] and not p["hours"] and not p.get("pinned") and not p.get("spent")]
    for p in progs:
        if p["program"] in idle:
            continue
        tag = "".join(f" ({t})" for t in ("pinned", "spent") if p.get(t))
        out.append(f"  {p['program']}{tag}: {p['agents']} agent"
                   f"{'s' if p['agents'] != 1 else ''}, yield {p['yield_']:.4f}±{p['sd']:.4f} bpb/device-h "
                   f"({p['credit']:.4f} bpb in {p['hours']:.2f} h), {p['share'] * 100:.0f}% of device-hours"
                   + (f"; its changes left val_bpb within the noise (P inert {p['inert']:.2f})"
                      if p.get("inert", 0.0) >= INERT_SURE else ""))
    if idle:
        out.append(f"  no agent so far: {', '.join(idle)}")
    return out


def gather(client, swarm_id: str, rows: list[dict] | None = None, running: bool = True) -> dict:
    """Agents' heartbeats and the swarm's figures (figures.compute), as one JSON-able dict.

    `client` may be None (the morning after without redis): then only `rows` count. `running`:
    whether a `swarm run` is live; a stopped swarm has no idea in flight.
    """
    rows = rows or []
    fig = _figures(rows, published(client, swarm_id))
    c = fig.counts
    agents = _agents(client, swarm_id)
    return {"swarm_id": swarm_id, "running": running, "time": time.time(), "agents": agents,
            "experiments": c.experiments, "runs": c.runs, "jobs": c.jobs, "records": c.records,
            "keeps": c.keeps, "best_moves": fig.best_moves,
            "experiments_per_hour": fig.rates.experiments_per_hour,
            "runs_per_hour": fig.rates.runs_per_hour,
            "best": {hw: b.model_dump() for hw, b in fig.best.items()},
            "counts": c.model_dump(), "rates": fig.rates.model_dump(),
            "suspect": fig.suspect, "contended": fig.contended,
            "current_ideas": current_ideas(agents, rows, running),
            "programs": programs(client, swarm_id),
            "lost_winners": []}


# The last gather's (rows, published, figures): `swarm run` redraws twice a second from rows it
# re-reads every 5 s, and figures.compute costs ~75 ms per 1,000 records on this machine.
_last: list = [None, None, None]


def _figures(rows: list[dict], pub: dict) -> figures.Figures:
    if not (_last[0] is rows and _last[1] == pub):   # the same list object, held here: never reused
        _last[:] = [rows, pub, figures.compute(rows, pub)]
    return _last[2]


def current_ideas(agents: list[dict], rows: list[dict], running: bool) -> list[dict]:
    """The ideas in flight: an agent's description while it trains, fixes or reports one,
    never after a stop, and never one its newest record (finished since) already holds."""
    if not running:
        return []
    last: dict[str, dict] = {}
    for r in rows:
        if figures.is_experiment(r) and (r.get("finished_at") or 0) >= (last.get(r.get("agent"), {})
                                                                        .get("finished_at") or 0):
            last[r.get("agent")] = r
    out = []
    for a in agents:
        desc, name = a.get("description"), a.get("agent")
        if not desc or a.get("phase") not in ACTIVE:
            continue
        r = last.get(name)
        if r is not None and r.get("description") == desc and (r.get("finished_at") or 0) >= (a.get("ts") or 0):
            continue
        out.append({"agent": name, "description": desc})
    return out


def _fmt(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def best_line(hw: str, b: dict) -> str:
    """`best [hw]: val_bpb V (n samples) at C, moved k times from the baseline B (+G)`."""
    line = (f"best [{hw}]: val_bpb {_fmt(b.get('val_bpb'))} ({_n(b.get('samples') or 0, 'sample')}) "
            f"at {str(b.get('commit') or '')[:10]}")
    moves = b.get("moves") or 0
    if moves:
        line += (f", moved {_n(moves, 'time')} from the baseline "
                 f"{_fmt(b.get('baseline_val_bpb'))} ({_fmt(b.get('gain'), '+.4f')})")
    else:
        line += ", the baseline (not moved yet)"
    return line


def render(data: dict, title: str = "") -> Group:
    """One row per agent (program, phase, progress over the budget, last delta vs parent,
    invalid edits), the ideas in flight and each agent's last outcome (an invalid edit's
    reason, a backend down or refused) in full below the table (so 80 columns truncate
    nothing), then best per hardware class with its samples, sigma, its degrees of freedom
    and the margin, the counts and rates, contended runs and suspect moves, and the
    lost-winner audit."""
    # No vertical rules: with seven columns they cost 24 of the 80 columns a terminal may have.
    t = Table(title=title or f"swarm {data.get('swarm_id', '')}", title_justify="left", box=box.SIMPLE_HEAD,
              pad_edge=False, collapse_padding=True)
    agents = data.get("agents") or []
    running = data.get("running", True)
    names = [str(a.get("agent", "?")) for a in agents]
    t.add_column("agent", no_wrap=True, min_width=max([5, *map(len, names)]))
    for col, kw in (("program", {"no_wrap": True}), ("phase", {"no_wrap": True}),
                    ("progress", {"width": 10}), ("Δparent", {"justify": "right", "no_wrap": True}),
                    ("exps", {"justify": "right", "no_wrap": True}), ("inv", {"justify": "right", "no_wrap": True})):
        t.add_column(col, **kw)
    outcomes = []
    for a in agents:
        p = a.get("progress")
        bar = (ProgressBar(total=1.0, completed=float(p), width=8) if running and isinstance(p, (int, float))
               else Text("-"))
        d = a.get("last_delta")
        delta = Text(_fmt(d, "+.4f"), style="green" if d and d > 0 else "red" if d else "")
        t.add_row(str(a.get("agent", "?")), str(a.get("program", "")),
                  str(a.get("phase", "")) if running else "stopped",
                  bar, delta, str(a.get("experiments", "")),
                  str((a.get("statuses") or {}).get("invalid", 0)))
        if a.get("last_outcome"):
            outcomes.append(f"{a.get('agent', '?')}: {a.get('last_outcome')}")
    if "current_ideas" in data:
        ideas = [f"{i['agent']}: {i['description']}" for i in data["current_ideas"]]
    else:  # a caller that gathered nothing: every agent's description
        ideas = [f"{a.get('agent', '?')}: {a['description']}" for a in agents if a.get("description")]
    lines = []
    if ideas:
        lines += ["current ideas:"] + [f"  {i}" for i in ideas]
    if outcomes:
        lines += ["last outcomes:"] + [f"  {o}" for o in outcomes]
    best = data.get("best") or {}
    for hw, b in sorted(best.items()):
        lines.append(best_line(hw, b))
        if b.get("sigma") is not None:
            lines.append(f"  sigma {_fmt(b.get('sigma'), '.5f')} ({b.get('dof') or 0} dof), "
                         f"margin {_fmt(b.get('margin'), '.5f')} (last decision)")
    if not best:
        lines.append("best: none yet (the baseline round runs first)")
    lines.append(counts_line(data))
    lines += program_lines(data.get("programs") or [])
    if data.get("contended"):
        lines.append(f"contended runs (the machine was slower than its norm): {len(data['contended'])}: "
                     + ", ".join(data["contended"][:5]) + (" ..." if len(data["contended"]) > 5 else ""))
    if data.get("suspect"):
        lines.append("SUSPECT moves (the confirm split got worse): " + ", ".join(data["suspect"]))
    lost = data.get("lost_winners") or []
    lines.append(f"winners not on best: {len(lost)}" + (" (Δ vs best, + = better)" if lost else ""))
    for r in lost:
        lines.append(f"  {r['experiment_id']} {_fmt(r.get('delta'), '+.4f')} > margin "
                     f"{_fmt(r.get('margin'), '.4f')}: {r['why']}")
    return Group(t, Text("\n".join(lines)))


def counts_line(data: dict) -> str:
    """`8 experiments, 17 runs (9 jobs), best moved 2 times, 75.8 experiments/hour`."""
    n = data.get("experiments", 0)
    runs = data.get("runs", n)
    eph = data.get("experiments_per_hour")
    moves = data.get("best_moves", 0)
    rates = data.get("rates") or {}
    over = "of running" + _paused(rates) if rates.get("pauses") else "over the whole run"
    return (f"{_n(n, 'experiment')}, {_n(runs, 'run')} ({_n(data.get('jobs', 0), 'job')}), best moved "
            f"{_n(moves, 'time')}, {_fmt(eph, '.1f')} experiments/hour {over}")


def _paused(rates: dict, sentence: bool = False) -> str:
    """The stretches with no run going that the rates and the duration leave out (figures.rates:
    a swarm stopped and resumed), in a parenthesis or a sentence; "" when there were none."""
    k = rates.get("pauses") or 0
    if not k:
        return ""
    span = _duration(rates.get("span_hours") or 0.0)
    if sentence:
        return (f" It was stopped and resumed: {_n(k, 'pause')} with no run going left out, "
                f"{span} from the first run to the last.")
    return f" (less {_n(k, 'pause')} with no run going: {span} from the first run to the last)"


def _troubles(data: dict) -> str:
    """Invalid edits and backends in trouble: events, not the clock (no 'down for N s')."""
    agents = data.get("agents") or []
    invalid = sum((a.get("statuses") or {}).get("invalid", 0) for a in agents)
    out = f", {invalid} invalid" if invalid else ""
    for a in agents:
        if a.get("backend_state") not in (None, "up"):
            out += f"; {a.get('agent')}: backend {a['backend_state']}: {str(a.get('backend_reason'))[:120]}"
    return out


def plain_line(data: dict) -> str:
    """The same in one line, for logs and for a stdout that is not a terminal. It changes only
    when something happened (an experiment, a job, a move of best), never with the clock or
    the agents' phases, so a caller prints it only when it differs from the last one."""
    best = ", ".join(f"{hw} {_fmt(b.get('val_bpb'))} ({_n(b.get('samples') or 0, 'sample')})"
                     for hw, b in sorted((data.get("best") or {}).items())) or "none"
    n, moves = data.get("experiments", 0), data.get("best_moves", 0)
    return (f"[swarm] {_n(n, 'experiment')}, {_n(data.get('runs', n), 'run')}, best {best}, "
            f"moved {_n(moves, 'time')}{_troubles(data)}")


# --- the end of `swarm run` ---------------------------------------------------------------------
NEXT = (("swarm lineage", "best's steps (--all: every other result; --format json|dot|graphml)"),
        ("swarm status", "best, noise and counts (--json for scripts)"),
        ("swarm report", "one HTML page: the lineage DAG, the progress plot, tables"),
        ("swarm export --format tsv --output -", "every record as a table"))


def _duration(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 2 else f"{hours:.1f} h"


def _quote(r: dict) -> str:
    desc = (r.get("description") or "").splitlines()[0] if r.get("description") else "?"
    return f"{r.get('agent', '?')}'s \"{desc[:100]}\""


_n = figures.plural


def _breakdown(counts: dict) -> str:
    outs = ", ".join(f"{n} {k}" for k, n in (counts.get("outcomes") or {}).items() if n)
    jobs = ", ".join(f"{n} {k}" for k, n in sorted((counts.get("jobs_by_kind") or {}).items()))
    parts = [f"experiments: {outs}" if outs else "", f"coordinator jobs: {jobs}" if jobs else ""]
    return "; ".join(p for p in parts if p)


def _not_moved(rows: list[dict], hw: str, b: dict) -> list[str]:
    """Why best did not move, in words: how the experiments compared, and the bar."""
    exps = [r for r in rows if figures.is_experiment(r) and (r.get("hardware_class") or "") == hw]
    judged = [r for r in exps if figures.delta_best(r) is not None]
    failed = sum(1 for r in exps if figures.outcome(r) == "failed")
    invalid = sum(1 for r in exps if figures.outcome(r) == "invalid")
    pending = sum(1 for r in exps if figures.outcome(r) == "pending")
    m, s = b.get("margin"), b.get("sigma")
    out = [f"best [{hw}] did not move: it is still the baseline, {_fmt(b.get('val_bpb'))} "
           f"({_n(b.get('samples') or 0, 'sample')})."]
    cls = [r for r in rows if (r.get("hardware_class") or "") == hw]
    contended = sum(1 for r in cls if r.get("contended"))
    if not judged and not b.get("samples") and contended:
        out.append(f"  No experiment was judged: best has no sample to compare with. The machine was "
                   f"busy: {contended} of {len(cls)} runs trained slower than its norm (contended), and "
                   f"a contended run is never a sample of best; on a quieter machine `swarm run` here "
                   f"resumes the swarm and measures it again.")
    elif not judged:
        out.append("  No experiment was judged against it yet"
                   + (f" ({pending} pending: the noise estimate needs more baseline runs first)."
                      if pending else "."))
    else:
        closest = max(judged, key=lambda r: figures.delta_best(r))
        d = figures.delta_best(closest)
        better = [r for r in judged if figures.delta_best(r) > 0]
        if not better:
            worst = min(figures.delta_best(r) for r in judged)
            out.append(f"  {len(judged)} experiment{'s' if len(judged) != 1 else ''} judged, all worse "
                       f"than the baseline by {-d:.4f}-{-worst:.4f}; the closest was {_quote(closest)} "
                       f"({d:+.4f}).")
        else:
            bar = "inside the margin" if m is not None else "unproven"
            out.append(f"  {len(better)} of {len(judged)} judged experiments looked better but stayed "
                       f"{bar}; the closest was {_quote(closest)} ({d:+.4f})"
                       + (f"; {pending} still pending a confirmation." if pending else "."))
    if failed or invalid:
        tried = sum(1 for r in exps if figures.already_tried(r))
        out.append(f"  {failed} crashed or timed out, {_n(invalid, 'invalid edit')} never trained"
                   + (f" ({tried} of them already tried by another run)." if tried else "."))
    if m is not None:
        ratio = f", {m / s:.1f} x the noise sigma {s:.4f}" if s else ""
        out.append(f"  A result must beat best by the margin ({m:.4f} at the last decision{ratio}) "
                   f"to move it.")
    elif judged:
        # every judgement so far ended pending or discarded before a margin could be set
        out.append(f"  No margin was set yet: the noise estimate rests on {b.get('dof') or 0} degrees of "
                   f"freedom and best on {_n(b.get('samples') or 0, 'sample')}; a result moves best once "
                   f"the runs of best and of it give its test enough evidence (`swarm run` here resumes).")
    return out


def backend_lines(agents: list[dict]) -> list[str]:
    """The agents whose backend ended the run out of order (their heartbeats' backend_state),
    in words: a one-knob program's agent that had nothing left to propose ended a `swarm run`
    whose last screen said only "moved 0 times" and "5 invalid edit(s)"."""
    out = []
    for a in agents:
        state, reason = a.get("backend_state"), a.get("backend_reason") or "no reason given"
        waited = a.get("spent_waited_s")   # set when it stopped after waiting for best that long
        who = f"{a.get('agent') or '?'} ({a.get('program') or '?'})"
        if state == "spent":
            out.append(f"{who}: its backend had nothing left to propose from best ({reason}); "
                       + (f"it stopped: best did not move in {waited:.0f} s." if isinstance(waited, (int, float))
                          else "it was waiting for best to move (running the coordinator's jobs)."))
        elif state == "refused":
            out.append(f"{who}: stopped, its backend refused: {reason}.")
        elif state == "down":
            out.append(f"{who}: its backend was not answering at the end ({reason}).")
    return out


def noise_history(coord_status: dict | None) -> dict[str, str]:
    """hardware class -> where its noise prior came from, when the coordinator's status() says
    (`classes[hw]["noise_prior"]`: a sentence, or a dict with `sigma`, `dof`, `swarms`); {}
    when it does not, or when the prior was dropped (this swarm's runs disagreed with it: then
    the summary says sigma was measured by this swarm's runs, which is what counted)."""
    out: dict[str, str] = {}
    for hw, c in ((coord_status or {}).get("classes") or {}).items():
        p = c.get("noise_prior") if isinstance(c, dict) else None
        if isinstance(p, dict) and p.get("sigma") is not None and not p.get("dropped"):
            out[hw] = (f"sigma {p['sigma']:.4f} over {p.get('dof', '?')} dof from "
                       + (_n(p["swarms"], "earlier swarm") if isinstance(p.get("swarms"), int)
                          else f"{p.get('swarms', '?')} earlier swarms"))
        elif isinstance(p, str) and p:
            out[hw] = p
    return out


def summary(rows: list[dict], data: dict, *, history: dict[str, str] | None = None,
            home_arg: str = "") -> str:
    """What happened in a run, in words a newcomer reads: how many experiments and runs, what
    moved best (each move: what changed, by how much, verified how) or why nothing did, where
    the noise estimate came from, and the next commands to run. `data` is gather()'s, from the
    same rows (so this and the last frame agree); `history`: per hardware class, the noise
    prior's origin when earlier swarms' sigma was used (noise_history); `home_arg`: appended
    to the commands (`--swarm-home DIR`)."""
    hours = (data.get("rates") or {}).get("hours") or 0.0
    n, runs = data.get("experiments", 0), data.get("runs", 0)
    lines = [f"swarm {data.get('swarm_id', '')}: {n} experiment{'s' if n != 1 else ''} and {runs} "
             f"run{'s' if runs != 1 else ''} in {_duration(hours)} (a run is any training: the experiments "
             f"and the coordinator's jobs)." + _paused(data.get("rates") or {}, sentence=True)]
    br = _breakdown(data.get("counts") or {})
    if br:
        lines.append(f"  {br}.")
    for hw, b in sorted((data.get("best") or {}).items()):
        steps = b.get("steps") or []
        if not steps:
            lines += _not_moved(rows, hw, b)
            continue
        lines.append(f"best [{hw}] moved {len(steps)} time{'s' if len(steps) != 1 else ''}: "
                     f"{_fmt(b.get('baseline_val_bpb'))} -> {_fmt(b.get('val_bpb'))} "
                     f"({_fmt(b.get('gain'), '+.4f')}, + = better; now {_n(b.get('samples') or 0, 'sample')})")
        for s in steps:
            flag = " [SUSPECT: its confirm split got worse]" if s.get("suspect") else ""
            flag += " [contended run]" if s.get("contended") else ""
            lines.append(f"  {s['n']}. {str(s['commit'])[:7]} {_fmt(s.get('delta'), '+.4f')} {s['decision']}: "
                         f"{s.get('agent') or '?'} ({s.get('program') or '?'}) \"{s.get('description') or '?'}\" "
                         f"(+{s.get('lines_added', 0)}/-{s.get('lines_removed', 0)} lines); "
                         f"{s.get('verified')}{flag}")
    pending = sum(1 for r in rows if figures.is_experiment(r) and figures.outcome(r) == "pending")
    if pending and any(b.get("steps") for b in (data.get("best") or {}).values()):
        # (when best did not move, _not_moved says it in its own words)
        lines.append(f"  {_n(pending, 'experiment')} still pending when the swarm stopped "
                     f"({'its test wants' if pending == 1 else 'their tests want'} more runs): `swarm run` "
                     f"again here resumes the swarm and decides "
                     f"{'it' if pending == 1 else 'them'}.")
    lines += backend_lines(data.get("agents") or [])
    for hw, b in sorted((data.get("best") or {}).items()):
        if b.get("sigma") is not None:
            h = (history or {}).get(hw)
            src = f"with a prior from earlier swarms ({h})" if h else "measured by this swarm's runs"
            lines.append(f"noise [{hw}]: sigma {b['sigma']:.4f} ({b.get('dof') or 0} dof), {src}.")
    if data.get("contended"):
        never = sum(1 for r in rows if figures.contended_out(r))
        if never:
            what = (f"; {_n(never, 'experiment')} {'was' if never == 1 else 'were'} never judged: "
                    f"{'its' if never == 1 else 'their'} runs stayed contended up to "
                    "promotion.contended_remeasures.")
        else:
            what = ", and its train.py is measured again before anything is decided on it."
        k = len(data['contended'])
        lines.append(f"{_n(k, 'run')} {'was' if k == 1 else 'were'} contended (the machine was slower than its "
                     "norm): a contended run counts nowhere" + what)
    width = max(len(c) for c, _ in NEXT) + len(home_arg) + 2
    lines.append("next:")
    lines += [f"  {(c + home_arg).ljust(width)}{what}" for c, what in NEXT]
    return "\n".join(lines)

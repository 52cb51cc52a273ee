"""The progress plot (progress.png), in the manner of the original's: val_bpb of every
run over time, colored by program, and best as a step line with its confidence band; minutes
or hours as fits the run. Figures from coordinator/state/figures.py."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here, and the CLI must not need one
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import transforms  # noqa: E402

from coordinator.state import figures  # noqa: E402
from coordinator.state.figures import record_status  # noqa: E402
from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
# runs without a score sit on the top edge, one marker per kind
FAILED_MARKERS = {"crash": "x", "timeout": "v", "invalid": "|"}
LINESTYLES = ("-", "--", ":", "-.")


def program_colors(programs) -> dict[str, str]:
    """A stable color per program (sorted), shared by the PNG and the HTML page."""
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(sorted(set(programs)))}


def _ok(v) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


Point = tuple[float, float, int, "float | None"]   # time, value, samples, sigma


def best_track(rows: list[dict], hw: str, fig: figures.Figures | None = None) -> list[Point]:
    """(time, value, samples, sigma) of best/hw as the coordinator knew it: at each move the new
    best's own mean, at each later decision the value it was judged against (more samples of
    it by then), and at the end the value every view shows (figures.Best)."""
    fig = fig or figures.compute(rows)
    cls = [r for r in figures.by_decided(rows) if (r.get("hardware_class") or "") == hw]
    b = fig.best.get(hw)
    if b is None or b.commit is None:
        return []
    pts: list[Point] = []
    cur = b.baseline
    first = next((r for r in rows if (r.get("hardware_class") or "") == hw), None)
    t0 = (first or {}).get("finished_at")
    if b.baseline_val_bpb is not None and t0 is not None:
        pts.append((t0, b.baseline_val_bpb, b.baseline_samples, None))
    for r in cls:
        t = r.get("decided_at") or r.get("finished_at")
        mean = _num(r.get("mean"))
        if r.get("best_after") and r["best_after"] != cur:
            cur = r["best_after"]
            n = int(r.get("samples") or 0)
            if mean is None:  # a ledger from before decisions recorded means: its samples then
                xs = [x for x in figures.samples_of([q for q in cls if (q.get("finished_at") or 0) <= t], hw, cur)]
                mean, n = (sum(xs) / len(xs), len(xs)) if xs else (None, 0)
            if mean is not None:
                pts.append((t, mean, max(n, 1), _num(r.get("sigma"))))
        elif r.get("best_before") == cur and (v := figures.compared_best(r)) is not None:
            pts.append((t, v[0], v[1], _num(r.get("sigma"))))
    end = max((r.get("finished_at") or 0 for r in rows), default=0)
    if b.val_bpb is not None:
        # best's value now, from its last run on (its re-measures come after the decisions)
        last = max((r.get("finished_at") or 0 for r in cls if r.get("commit") == b.commit), default=0)
        at = max(last, pts[-1][0] if pts else last)
        pts.append((at, b.val_bpb, b.samples, b.sigma))
        if end > at:
            pts.append((end, b.val_bpb, b.samples, b.sigma))
    return pts


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(v) else None


def time_unit(span_s: float) -> tuple[str, float]:
    """Minutes for a run under two hours, else hours: (label, seconds per unit)."""
    return ("minutes", 60.0) if span_s < 2 * 3600 else ("hours", 3600.0)


def write_progress_png(rows: list[dict], path: Path, colors: dict[str, str] | None = None,
                       fig: figures.Figures | None = None) -> Path:
    """Draw the progress plot to path (written whole, via a temp file); return path. Every
    scored run as a dot colored by program; best of each hardware class as a step line with
    its confidence band (the value +- 2 standard errors, sigma / sqrt(samples))."""
    fig = fig or figures.compute(rows)
    colors = colors or program_colors(r.get("program") or "?" for r in rows)
    t0 = min((r.get("started_at") or r.get("finished_at") or 0 for r in rows), default=0)
    end = max((r.get("finished_at") or 0 for r in rows), default=t0)
    unit, per = time_unit(end - t0)
    x_of = lambda t: ((t or t0) - t0) / per  # noqa: E731
    plot, ax = plt.subplots(figsize=(12, 6), dpi=100)
    top = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for prog, color in colors.items():
        pts = [(x_of(r.get("finished_at")), r["val_bpb"]) for r in rows
               if (r.get("program") or "?") == prog and _ok(r.get("val_bpb"))]
        if pts:
            ax.scatter(*zip(*pts), s=10, color=color, alpha=0.45, label=prog, linewidths=0)
    for kind, marker in FAILED_MARKERS.items():
        xs = [x_of(r.get("finished_at")) for r in rows if record_status(r) == kind]
        if xs:
            ax.scatter(xs, [0.98] * len(xs), transform=top, marker=marker, s=18, color="black",
                       alpha=0.6, label=f"{kind} ({len(xs)})")
    classes = sorted(fig.best)
    for i, hw in enumerate(classes):
        track = best_track(rows, hw, fig)
        if not track:
            continue
        xs = [x_of(t) for t, *_ in track]
        ys = [v for _, v, _, _ in track]
        sig = fig.best[hw].sigma
        half = [2 * (s if s is not None else sig or 0.0) / math.sqrt(max(n, 1)) for _, _, n, s in track]
        ax.fill_between(xs, [y - h for y, h in zip(ys, half)], [y + h for y, h in zip(ys, half)],
                        step="post", color="black", alpha=0.10, linewidth=0,
                        label=f"best/{hw} ± 2 s.e." if any(half) else None)
        ax.step(xs, ys, where="post", color="black", lw=1.6, ls=LINESTYLES[i % 4],
                label=f"best/{hw}: {ys[-1]:.4f} ({figures.plural(track[-1][2], 'sample')})")
        moved = {s.experiment_id for s in fig.best[hw].steps}
        kept = [r for r in rows if r.get("experiment_id") in moved and _ok(r.get("val_bpb"))]
        if kept:  # the runs that moved best, ringed
            ax.scatter([x_of(r.get("finished_at")) for r in kept], [r["val_bpb"] for r in kept],
                       s=28, c=[colors.get(r.get("program") or "?", "k") for r in kept],
                       edgecolors="black", linewidths=0.8, zorder=3)
    scored = [r["val_bpb"] for r in rows if _ok(r.get("val_bpb"))]
    if scored:  # clip the long tail of bad runs so the improvements stay visible
        lo, hi = min(scored), sorted(scored)[int(0.95 * (len(scored) - 1))]
        pad = (hi - lo) * 0.08 or 0.01
        ax.set_ylim(lo - pad, hi + pad * 3)
    ax.set_xlabel(f"{unit} since the first run")
    ax.set_ylabel("val_bpb (lower is better)")
    c = fig.counts
    ax.set_title(f"{figures.plural(c.experiments, 'experiment')}, {figures.plural(c.runs, 'run')} "
                 f"({figures.plural(c.jobs, 'coordinator job')}), best moved {figures.plural(fig.best_moves, 'time')}, "
                 f"{len(classes)} hardware class(es)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    plot.tight_layout()
    try:
        return atomic_write(path, lambda f: plot.savefig(f, format="png"))
    finally:
        plt.close(plot)

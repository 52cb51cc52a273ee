"""The progress plot (progress.png), in the manner of the original's: val_bpb of every
experiment over time, colored by program, the accepted ones joined as a step line."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here, and the CLI must not need one
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import transforms  # noqa: E402

from coordinator.review.report.tables import record_status  # noqa: E402
from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
ACCEPTED = ("promote", "simplification", "merge")
# runs without a score sit on the top edge, one marker per kind
FAILED_MARKERS = {"crash": "x", "timeout": "v", "invalid": "|"}
LINESTYLES = ("-", "--", ":", "-.")


def program_colors(programs) -> dict[str, str]:
    """A stable color per program (sorted), shared by the PNG and the HTML page."""
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(sorted(set(programs)))}


def _ok(v) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


def best_steps(rows: list[dict], hw: str) -> list[tuple[float, float]]:
    """(time, val_bpb) of each record that moved best/hw, preceded by the first baseline.
    Each step is drawn at the mean of its commit's samples (baseline round, confirmation and
    verification runs), the value decisions compare against, not at one noisy sample."""
    rs = sorted((r for r in rows if r.get("hardware_class") == hw),
                key=lambda r: r.get("finished_at") or 0)

    def mean_of(commit, fallback: float) -> float:
        vs = [x["val_bpb"] for x in rs if commit and x.get("commit") == commit
              and record_status(x) == "ok" and _ok(x.get("val_bpb"))]
        return sum(vs) / len(vs) if vs else fallback

    steps: list[tuple[float, float]] = []
    for r in rs:
        if not steps and r.get("kind") == "baseline" and _ok(r.get("val_bpb")):
            steps.append((r["finished_at"], mean_of(r.get("commit"), r["val_bpb"])))
        elif r.get("decision") in ACCEPTED and _ok(r.get("val_bpb")):
            commit = r.get("merge_commit") if r.get("decision") == "merge" and r.get("merge_commit") \
                else r.get("commit")
            # a merge: the merged commit's own verification runs are what best stands at
            steps.append((r["finished_at"], mean_of(commit, r["val_bpb"])))
    return steps


def write_progress_png(rows: list[dict], path: Path, colors: dict[str, str] | None = None) -> Path:
    """Draw the progress plot to path (written whole, via a temp file); return path."""
    colors = colors or program_colors(r.get("program") or "?" for r in rows)
    t0 = min((r.get("started_at") or r.get("finished_at") or 0 for r in rows), default=0)
    hours = lambda t: ((t or t0) - t0) / 3600.0  # noqa: E731
    fig, ax = plt.subplots(figsize=(12, 6), dpi=100)
    top = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for prog, color in colors.items():
        pts = [(hours(r.get("finished_at")), r["val_bpb"]) for r in rows
               if (r.get("program") or "?") == prog and _ok(r.get("val_bpb"))]
        if pts:
            ax.scatter(*zip(*pts), s=10, color=color, alpha=0.45, label=prog, linewidths=0)
    for kind, marker in FAILED_MARKERS.items():
        xs = [hours(r.get("finished_at")) for r in rows if record_status(r) == kind]
        if xs:
            ax.scatter(xs, [0.98] * len(xs), transform=top, marker=marker, s=18, color="black",
                       alpha=0.6, label=f"{kind} ({len(xs)})")
    classes = sorted({r.get("hardware_class") or "?" for r in rows})
    for i, hw in enumerate(classes):
        steps = best_steps(rows, hw)
        if steps:
            end = max(hours(r.get("finished_at")) for r in rows)
            xs = [hours(t) for t, _ in steps] + [end]
            ys = [v for _, v in steps] + [steps[-1][1]]
            ax.step(xs, ys, where="post", color="black", lw=1.6, ls=LINESTYLES[i % 4],
                    label=f"best/{hw}")
            kept = [r for r in rows if r.get("hardware_class") == hw
                    and r.get("decision") in ACCEPTED and _ok(r.get("val_bpb"))]
            ax.scatter([hours(r["finished_at"]) for r in kept], [r["val_bpb"] for r in kept],
                       s=28, c=[colors.get(r.get("program") or "?", "k") for r in kept],
                       edgecolors="black", linewidths=0.8, zorder=3)
    scored = [r["val_bpb"] for r in rows if _ok(r.get("val_bpb"))]
    if scored:  # clip the long tail of bad runs so the improvements stay visible
        lo, hi = min(scored), sorted(scored)[int(0.95 * (len(scored) - 1))]
        pad = (hi - lo) * 0.08 or 0.01
        ax.set_ylim(lo - pad, hi + pad * 3)
    ax.set_xlabel("hours since the first run")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(f"{len(rows)} experiments, {len(classes)} hardware class(es)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)

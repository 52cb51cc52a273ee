"""The report's search section, one block per Optuna study (program and hardware class):
parameter importances (Optuna's estimator), the lowest trial and its parameters, and each parameter's value
against val_bpb (a matplotlib scatter per parameter, inlined as a PNG)."""
from __future__ import annotations

import base64
import html
import io
import logging
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

log = logging.getLogger(__name__)

ORIGIN_COLORS = {"optuna": "#1f77b4", "llm": "#d62728", "baseline": "#2ca02c",
                 "confirm": "#9467bd", "verify": "#8c564b"}


def load_studies(client, swarm_id: str) -> list:
    """The swarm's studies from its redis (optuna is imported only when there are some)."""
    from agents.backends.optuna_study import journal_prefix

    if client is None or not client.exists(f"{journal_prefix(swarm_id)}:log_number"):
        return []
    from agents.backends.optuna_study import study_views
    return study_views(client, swarm_id)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(repr(v) if isinstance(v, str) else str(v))


def scatter_png(view) -> bytes:
    """One panel per parameter: its value (x) against val_bpb (y), colored by where the trial
    came from; failed trials are marks on the top edge."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    names = sorted(view.distributions, key=lambda n: -view.importances.get(n, 0.0))
    cols = min(3, max(1, len(names)))
    rows_n = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), dpi=90, squeeze=False)
    ok = [r for r in view.rows if r["state"] == "COMPLETE" and r["value"] is not None]
    vals = sorted(r["value"] for r in ok)
    ylim = None
    if vals:  # clip the long tail of bad trials so the good region stays readable
        lo, hi = vals[0], vals[int(0.9 * (len(vals) - 1))]
        pad = (hi - lo) * 0.08 or 0.01
        ylim = (lo - pad, hi + pad * 3)
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_visible(False)
            continue
        n = names[k]
        d = view.distributions[n]
        cat = isinstance(d, CategoricalDistribution)

        def x_of(v, d=d, cat=cat):
            return d.choices.index(v) if cat and v in d.choices else v

        for origin in sorted({r["origin"] for r in ok}):
            pts = [(x_of(r["params"][n]), r["value"]) for r in ok
                   if r["origin"] == origin and n in r["params"]]
            if pts:
                ax.scatter(*zip(*pts), s=16, alpha=0.7, color=ORIGIN_COLORS.get(origin, "#7f7f7f"),
                           label=origin, linewidths=0)
        bad = [x_of(r["params"][n]) for r in view.rows if r["state"] == "FAIL" and n in r["params"]]
        if bad:
            ax.scatter(bad, [0.98] * len(bad), marker="x", s=18, color="black", alpha=0.6,
                       transform=ax.get_xaxis_transform(), label="failed", clip_on=False)
        if view.best_params and n in view.best_params and view.best_value is not None:
            ax.scatter([x_of(view.best_params[n])], [view.best_value], s=90, facecolors="none",
                       edgecolors="black", linewidths=1.4, label="best")
        if isinstance(d, (FloatDistribution, IntDistribution)):
            if d.log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())   # 2x10^-1 3x10^-1 ... overlap
                ax.set_xlim(d.low / 1.15, d.high * 1.15)
            else:  # the whole declared range: where in it the trials went is the point
                pad = (d.high - d.low) * 0.04 or 0.5
                ax.set_xlim(d.low - pad, d.high + pad)
        if cat:
            ax.set_xticks(range(len(d.choices)), [str(c) for c in d.choices])
        if ylim:
            ax.set_ylim(*ylim)
        imp = view.importances.get(n)
        ax.set_title(f"{n}" + (f"  (importance {imp:.2f})" if imp is not None else ""), fontsize=9)
        ax.set_ylabel("val_bpb", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def search_html(studies: list) -> str:
    """The search section's HTML ('' when the swarm has no Optuna study)."""
    if not studies:
        return ""
    out = ["<h2 id='search'>Search (Optuna studies)</h2>",
           "<p class='note'>One study per program and hardware class, shared by every agent "
           "with the optuna backend. Importances are Optuna's own estimate over the finished "
           "trials; trials come from the optimizer (optuna), the LLM in mixed mode (llm), and "
           "the coordinator's baseline, confirmation and verification runs.</p>"]
    for v in sorted(studies, key=lambda s: s.name):
        states: dict[str, int] = {}
        for r in v.rows:
            states[r["state"]] = states.get(r["state"], 0) + 1
        counts = ", ".join(f"{k.lower().replace('_', ' ')} {n}" for k, n in sorted(states.items()))
        out.append(f"<div class='study' data-study='{html.escape(v.name)}'>"
                   f"<h3>{html.escape(v.program)} on {html.escape(v.hardware_class)}</h3>"
                   f"<p class='summary'><span>trials: <b>{len(v.rows)}</b> ({counts})</span>")
        if v.best_value is not None:
            # Optuna's best trial is one run; the swarm's best is a mean over samples (figures.py):
            # two figures named alike read as one that disagrees with itself
            out.append(f"<span>lowest trial val_bpb: <b>{v.best_value:.4f}</b> (one run, Optuna's best trial; "
                       "best's value above is the mean of its samples)</span>")
        out.append("</p>")
        if v.importances:
            out.append("<table class='stats importances'><tr><th>parameter</th><th>importance</th>"
                       "<th></th></tr>")
            for n, imp in v.importances.items():
                out.append(f"<tr><td>{html.escape(n)}</td><td>{imp:.3f}</td><td><div "
                           f"style='background:#1f77b4;height:10px;width:{max(1, round(imp * 200))}px'>"
                           "</div></td></tr>")
            out.append("</table>")
        else:
            out.append("<p class='note'>too few finished trials for importances</p>")
        if v.best_params:
            out.append("<table class='stats best-params'><tr><th>the lowest trial's parameters</th><th>value</th></tr>"
                       + "".join(f"<tr><td>{html.escape(n)}</td><td>{_fmt(x)}</td></tr>"
                                 for n, x in sorted(v.best_params.items())) + "</table>")
        if v.distributions:
            png = base64.b64encode(scatter_png(v)).decode()
            out.append(f"<img class='search-scatter' alt='parameter values against val_bpb' "
                       f"src='data:image/png;base64,{png}'>")
        out.append("</div>")
    return "\n".join(out)

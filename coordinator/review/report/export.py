"""`swarm lineage --format json|dot|graphml`: the lineage graph for other tools, written with
networkx's own writers (node-link JSON, pydot's DOT, GraphML)."""
from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import IO

import networkx as nx

from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

FORMATS = ("json", "dot", "graphml")


# One colour per outcome, shared with the HTML report's DAG (page.js reads it from the page data).
OUTCOME_COLORS = {"baseline": "#9e9e9e", "kept": "#2ca02c", "merged": "#1f77b4", "carried": "#17becf",
                  "pending": "#ff7f0e", "discarded": "#d9d9d9", "unjudged": "#f7b6d2",
                  "failed": "#444444", "sample": "#bcbd22",
                  "unrecorded": "#ffffff"}


def node_label(sha: str, a: dict) -> str:
    """`abc1234 2.4512 +0.0210`: the commit, its value and its delta (+ = better)."""
    v, d = a.get("val_bpb"), a.get("delta")
    parts = [str(sha)[:7]]
    if isinstance(v, (int, float)) and v == v:
        parts.append(f"{v:.4f}")
    if isinstance(d, (int, float)) and d == d and a.get("outcome") != "baseline":
        parts.append(f"{d:+.4f}")
    return " ".join(parts)


class ExportError(ValueError):
    """The graph cannot be written in the format asked for."""


def _scalar(v):
    """GraphML and DOT take only scalars: None is dropped, lists/dicts become JSON text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (str, int, float, bool)):
        return v
    if hasattr(v, "item"):
        return _scalar(v.item())
    return json.dumps(v, default=str)


def _scalar_copy(G: nx.DiGraph, *, dot: bool = False) -> nx.DiGraph:
    H = nx.DiGraph(name="lineage") if dot else nx.DiGraph()  # DOT: `digraph lineage {`
    for n, a in G.nodes(data=True):
        attrs = {k: _scalar(v) for k, v in a.items() if _scalar(v) is not None}
        if dot:
            # pydot writes raw strings: quote every value so ':' or spaces in descriptions parse
            attrs = {k: json.dumps(str(v)) for k, v in attrs.items()}
            attrs["label"] = json.dumps(node_label(n, a))
            attrs["shape"] = json.dumps("diamond" if a.get("is_merge") else "ellipse")
            attrs["style"] = json.dumps("filled,bold" if a.get("best_path") else "filled")
            attrs["fillcolor"] = json.dumps(OUTCOME_COLORS.get(a.get("outcome"), "#ffffff"))
        H.add_node(json.dumps(n) if dot else n, **attrs)
    for u, v, a in G.edges(data=True):
        attrs = {k: _scalar(x) for k, x in a.items() if _scalar(x) is not None}
        if dot:
            attrs = {k: json.dumps(str(x)) for k, x in attrs.items()}
        H.add_edge(json.dumps(u) if dot else u, json.dumps(v) if dot else v, **attrs)
    return H


def graph_text(G: nx.DiGraph, fmt: str) -> str:
    """The graph as text in fmt (json: networkx node-link data with edges under 'links')."""
    if fmt == "json":
        return json.dumps(nx.node_link_data(G, edges="links"), default=str, indent=1)
    if fmt == "graphml":
        return "\n".join(nx.generate_graphml(_scalar_copy(G))) + "\n"
    if fmt == "dot":
        try:
            from networkx.drawing.nx_pydot import to_pydot
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ExportError("--format dot needs the 'pydot' package (pip install pydot)") from e
        return to_pydot(_scalar_copy(G, dot=True)).to_string()
    raise ExportError(f"unknown format {fmt!r} (choose one of: {', '.join(FORMATS)})")


def write_graph(G: nx.DiGraph, fmt: str, out: str | Path | IO[str]) -> None:
    """Write G as json|dot|graphml to a path (whole, via a temp file) or an open text stream."""
    text = graph_text(G, fmt)
    if isinstance(out, (str, Path)):
        atomic_write(out, text)
    elif isinstance(out, io.TextIOBase) or hasattr(out, "write"):
        out.write(text)
    else:
        raise ExportError(f"cannot write to {out!r}: give a path or a text stream")

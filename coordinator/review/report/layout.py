"""A layered layout of the lineage DAG: x is the generation (longest path from a root),
y the position within it, one band per hardware class. Computed in Python so the page only draws."""
from __future__ import annotations

import logging

import networkx as nx

log = logging.getLogger(__name__)


def layered_positions(G: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """node -> (x, y). Children sit near their first parent so chains read left to right."""
    if G.number_of_nodes() == 0:
        return {}
    if not nx.is_directed_acyclic_graph(G):
        raise ValueError("lineage graph has a cycle: commits cannot be their own ancestors")
    layer: dict[str, int] = {}
    for n in nx.topological_sort(G):
        layer[n] = max((layer[p] + 1 for p in G.predecessors(n)), default=0)
    classes = sorted({G.nodes[n].get("hardware_class") or "?" for n in G})
    by: dict[tuple[str, int], list[str]] = {}
    for n, x in layer.items():
        by.setdefault((G.nodes[n].get("hardware_class") or "?", x), []).append(n)
    pos: dict[str, tuple[float, float]] = {}
    base = 0.0
    for hw in classes:
        width = max((len(v) for (h, _), v in by.items() if h == hw), default=1) + 1
        keys = sorted(x for (h, x) in by if h == hw)
        for x in keys:
            nodes = by[(hw, x)]

            def key(n):
                a = G.nodes[n]
                ps = [pos[p][1] for p in G.predecessors(n) if p in pos]
                # the best chain goes first (top of the band), then by where the parent sits
                return (not a.get("on_best"), min(ps) if ps else 0.0, a.get("started_at") or 0)

            nodes.sort(key=key)
            # The top row of a band is best's: a node off best (a merge candidate that did not
            # stack, whose first parent is best) never takes it, even where best has no node.
            row = 0
            for n in nodes:
                if row == 0 and not G.nodes[n].get("on_best"):
                    row = 1
                pos[n] = (float(x), base - float(row))
                row += 1
        base -= width + 3.0
    return pos

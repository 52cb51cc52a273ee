"""The `swarm lineage` terminal tree: the first-parent chain of each hardware class's `best`.

Plain text with box-drawing characters (no markup), so the CLI prints it and tests read it.
"""
from __future__ import annotations

import json
import logging

import networkx as nx

from coordinator.state.figures import plural

log = logging.getLogger(__name__)

BEST_TAGS = ("promote", "simplification", "merge")


class TreeError(ValueError):
    """The graph cannot be drawn as asked (unknown hardware class...)."""


def short(sha: str | None) -> str:
    return (sha or "-------")[:7]


def _fmt_bpb(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and v == v else "   -  "


def first_parent(G: nx.DiGraph, n: str) -> str | None:
    """The first parent of node n in G, or None at a root."""
    preds = list(G.predecessors(n))
    for p in preds:
        if G.edges[p, n].get("first_parent", True):
            return p
    return preds[0] if preds else None


def best_tips(G: nx.DiGraph) -> dict[str, str]:
    """hardware_class -> the tip of its best chain (G.graph['best'] if the builder set it)."""
    given = G.graph.get("best")
    if isinstance(given, dict) and given:
        return {hw: sha for hw, sha in given.items() if sha in G}
    tips: dict[str, str] = {}
    for n, a in G.nodes(data=True):
        if not a.get("on_best"):
            continue
        # on_best may cover every ancestor of best (merged-in commits too): a tip is a node
        # with no successor on best at all
        if any(G.nodes[c].get("on_best") for c in G.successors(n)):
            continue
        hw = a.get("hardware_class") or "?"
        # the latest tip wins should a class ever show two (it should not)
        if hw not in tips or (a.get("finished_at") or 0) > (G.nodes[tips[hw]].get("finished_at") or 0):
            tips[hw] = n
    return tips


def best_chain(G: nx.DiGraph, tip: str) -> list[str]:
    """The first-parent chain from the root to tip, root first."""
    chain, seen = [], set()
    n: str | None = tip
    while n is not None and n not in seen:
        seen.add(n)
        chain.append(n)
        n = first_parent(G, n)
    return chain[::-1]


def _step_tag(a: dict) -> str:
    if a.get("is_merge"):
        return "merge"
    d = a.get("decision") or a.get("status") or ""
    return d if d in BEST_TAGS else ("root" if not d or d == "sample" else d)


def _who(a: dict) -> str:
    if a.get("outcome") == "baseline":  # the root: every agent ran it, none made it
        return "(every agent)"
    return f"{a.get('agent') or '?'}  {a.get('program') or '?'}"


def _val(a: dict, hw: str | None):
    """The node's val_bpb on hardware class `hw` (the root is scored by every class)."""
    per = a.get("val_bpb_by_class")
    if hw and isinstance(per, str) and per:
        v = json.loads(per).get(hw)
        if v is not None:
            return v
    return a.get("val_bpb")


def _line(G: nx.DiGraph, n: str, tag: str, parent: str | None, hw: str | None = None) -> str:
    a = G.nodes[n]
    v = _val(a, hw)
    pv = _val(G.nodes[parent], hw) if parent else None
    d = a.get("delta")
    # One sign convention everywhere (tree, table, TSV, JSON, report): + = better. The
    # decision's delta is against the best of its time (for a step on best: its first parent).
    if isinstance(d, (int, float)) and d == d and parent is not None:
        change = f"{d:+.4f}"
    elif isinstance(v, float) and isinstance(pv, float):
        change = f"{pv - v:+.4f}"
    else:
        change = "       "
    flags = " [SUSPECT]" if a.get("suspect") else ""
    desc = (a.get("description") or "").splitlines()[0] if a.get("description") else ""
    if a.get("is_merge"):
        other = [p for p in G.predecessors(n) if not G.edges[p, n].get("first_parent", True)]
        if other:
            o = G.nodes[other[0]]
            odesc = (o.get("description") or "").splitlines()[0] if o.get("description") else ""
            desc = (f"merge of {short(other[0])} ({o.get('agent', '?')}, {o.get('program', '?')}:"
                    f" {odesc}) onto {short(parent)}")
    return f"{short(n)}  {_fmt_bpb(v)}  {change}  {tag:<14} {_who(a)}{flags}  {desc}".rstrip()


def _side_lines(G: nx.DiGraph, n: str, chain: set[str], invalid: list[dict], hw: str) -> list[str]:
    # the root is shared by every class: only this class's attempts belong under it
    kids = [c for c in G.successors(n)
            if c not in chain and (G.nodes[c].get("hardware_class") or hw) == hw]
    invalid = [r for r in invalid if (r.get("hardware_class") or hw) == hw]
    kids.sort(key=lambda c: G.nodes[c].get("started_at") or 0)
    out = []
    for c in kids:
        a = G.nodes[c]
        tag = a.get("decision") or a.get("status") or "?"
        if tag == "sample":  # a commit only jobs trained (a merge no decision holds any more)
            tag = a.get("outcome") or tag
        if a.get("status") in ("crash", "timeout"):
            tag = a["status"]
        if not G.edges[n, c].get("first_parent", True):
            tag = f"{tag} (2nd parent)"
        out.append(_line(G, c, tag, n, hw))
    if not invalid and G.nodes[n].get("invalid_children"):
        # the builder kept only a count: the records themselves are in the ledger
        out.append(f"{plural(G.nodes[n]['invalid_children'], 'invalid edit')} on this commit "
                   "(never trained; `swarm export` lists them)")
    for r in invalid:
        reason = r.get("reason") or ""
        out.append(f"{r.get('experiment_id')}  invalid  {r.get('agent', '?')}  "
                   f"{r.get('program', '?')}  {r.get('description', '')}  ({reason})".rstrip())
    return out


def _invalid_by_parent(G: nx.DiGraph) -> dict[str, list[dict]]:
    res: dict[str, list[dict]] = {}
    for r in G.graph.get("invalid") or []:
        res.setdefault(r.get("parent"), []).append(r)
    for n, a in G.nodes(data=True):
        if a.get("status") == "invalid":  # a builder that keeps invalid edits as nodes
            p = first_parent(G, n)
            res.setdefault(p, []).append({**a, "experiment_id": a.get("experiment_id", n)})
    return res


def render_tree(G: nx.DiGraph, *, all: bool = False, hardware_class: str | None = None) -> str:
    """The best branch of each hardware class as a text tree; all=True adds the siblings
    that did not make it (discarded, crashed, timed out, conflicting, invalid)."""
    tips = best_tips(G)
    if hardware_class is not None:
        if hardware_class not in tips:
            known = ", ".join(sorted(tips)) or "none"
            raise TreeError(f"unknown hardware class {hardware_class!r} (known: {known})")
        tips = {hardware_class: tips[hardware_class]}
    if not tips:
        return "no best branch yet (no promoted or baseline commit in the ledger)\n"
    invalid = _invalid_by_parent(G) if all else {}
    blocks = []
    for hw in sorted(tips):
        chain = best_chain(G, tips[hw])
        first, last = _val(G.nodes[chain[0]], hw), _val(G.nodes[chain[-1]], hw)
        head = f"best/{hw}: {plural(len(chain) - 1, 'step')}, val_bpb {_fmt_bpb(first)} -> {_fmt_bpb(last)}"
        if isinstance(first, float) and isinstance(last, float):
            head += f" ({first - last:+.4f}; deltas: improvement over best, + = better)"
        lines = [head]
        on_chain = set(chain)
        for i, n in enumerate(chain):
            parent = chain[i - 1] if i else None
            tag = "root" if i == 0 else _step_tag(G.nodes[n])
            is_last = i == len(chain) - 1
            lines.append(("└─● " if is_last else "├─● ") + _line(G, n, tag, parent, hw))
            if all:
                side = _side_lines(G, n, on_chain, invalid.get(n, []), hw)
                bar = "    " if is_last else "│   "
                for j, s in enumerate(side):
                    lines.append(bar + ("└ " if j == len(side) - 1 else "├ ") + s)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"

"""The `swarm lineage` tree and graph exports on a synthetic ledger with a real git repo."""
from __future__ import annotations

import io
import json

import networkx as nx
import pytest

from coordinator.review.report import TreeError, render_tree, write_graph
from coordinator.review.report.tree import best_chain, best_tips
from tests.synthetic import lineage_graph, make_swarm

CLASSES = ("h100", "a100")


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    sw = make_swarm(tmp_path_factory.mktemp("swarm"), experiments=80, agents=4,
                    hardware_classes=CLASSES, seed=0)
    return sw, lineage_graph(sw)


def _promoted(sw, hw):
    return [r for r in sw.rows if r["hardware_class"] == hw and r["decision"] in ("promote", "merge")]


def test_tree_follows_each_best_ref_and_its_steps(swarm):
    sw, G = swarm
    text = render_tree(G)
    for hw in CLASSES:
        assert f"best/{hw}:" in text
        chain = best_chain(G, best_tips(G)[hw])
        assert chain[0] == sw.root and chain[-1] == sw.best[hw]
        for r in _promoted(sw, hw):
            step = r["merge_commit"] or r["commit"]
            assert step[:7] in text, f"{r['decision']} {step} missing from the tree"
    discarded = [r for r in sw.rows if r["decision"] == "discard"]
    assert discarded and not any(r["commit"][:7] in text for r in discarded)


def test_tree_marks_merges_with_both_parents_and_suspects(swarm):
    sw, G = swarm
    text = render_tree(G)
    merge = next(r for r in sw.rows if r["decision"] == "merge")
    line = next(ln for ln in text.splitlines() if merge["merge_commit"][:7] in ln)
    assert f"merge of {merge['commit'][:7]} ({merge['agent']}, {merge['program']}:" in line
    assert "onto " in line
    suspect = next(r for r in sw.rows if r["suspect"] and r["decision"] == "promote")
    sline = next(ln for ln in text.splitlines() if suspect["commit"][:7] in ln)
    assert "[SUSPECT]" in sline
    assert text.count("[SUSPECT]") == sum(1 for r in sw.rows if r["suspect"]
                                          and r["decision"] in ("promote", "merge"))


def test_tree_all_adds_discarded_crashed_and_invalid_siblings(swarm):
    sw, G = swarm
    text = render_tree(G, all=True)
    for kind in ("discard", "crash", "timeout", "conflict", "did-not-stack"):
        rs = [r for r in sw.rows if r["decision"] == kind and r["commit"]]
        assert rs, kind
        # every such attempt made on a best commit is listed under it
        on_best = [r for r in rs if G.nodes[r["parent"]].get("on_best")]
        for r in on_best:
            assert r["commit"][:7] in text, (kind, r["commit"])
    assert "crash" in text and "timeout" in text
    # invalid edits have no commit: each is shown under the best commit it was made on,
    # by experiment id, or as a count when the graph keeps only a count
    chains = {n for hw in CLASSES for n in best_chain(G, best_tips(G)[hw])}
    bad = [r for r in sw.rows if r["run_status"] == "invalid" and r["parent"] in chains]
    assert bad
    lines = text.splitlines()
    for r in bad:
        if r["experiment_id"] in text:
            continue
        n = sum(1 for x in sw.rows if x["run_status"] == "invalid" and x["parent"] == r["parent"])
        at = next(i for i, ln in enumerate(lines) if ln.startswith(("├─● ", "└─● "))
                  and ln[4:11] == r["parent"][:7])
        block = []
        for ln in lines[at + 1:]:
            if ln.startswith(("├─● ", "└─● ")) or not ln.strip():
                break
            block.append(ln)
        said = f"{n} invalid edit{'s' if n != 1 else ''} on this commit"
        assert any(said in ln for ln in block), (r["parent"], block)


def test_tree_one_class_and_unknown_class(swarm):
    _, G = swarm
    text = render_tree(G, hardware_class="a100")
    assert "best/a100:" in text and "best/h100:" not in text
    with pytest.raises(TreeError, match="unknown hardware class 'v100'"):
        render_tree(G, hardware_class="v100")


def test_write_graph_round_trips_through_networkx_readers(swarm, tmp_path):
    _, G = swarm
    buf = io.StringIO()
    write_graph(G, "json", buf)
    H = nx.node_link_graph(json.loads(buf.getvalue()), edges="links")
    assert set(H.nodes) == set(G.nodes) and H.number_of_edges() == G.number_of_edges()
    write_graph(G, "graphml", tmp_path / "g.graphml")
    H = nx.read_graphml(tmp_path / "g.graphml")
    assert set(H.nodes) == set(G.nodes) and H.number_of_edges() == G.number_of_edges()
    sha = next(n for n in G if G.nodes[n].get("is_merge"))
    assert H.nodes[sha]["is_merge"] is True
    pydot = pytest.importorskip("pydot")
    write_graph(G, "dot", tmp_path / "g.dot")
    (D,) = pydot.graph_from_dot_file(str(tmp_path / "g.dot"))
    names = {n.get_name().strip('"') for n in D.get_nodes()} - {"node", "edge", "graph"}
    assert names == set(G.nodes)
    with pytest.raises(ValueError, match="unknown format 'svg'"):
        write_graph(G, "svg", io.StringIO())


def test_tree_head_counts_steps_in_words(tmp_path):
    # The quick start's tree began "best/cpu-amd-epyc-1t: 1 steps, ..."
    sw = make_swarm(tmp_path / "one", experiments=6, agents=2, hardware_classes=("h100",), seed=4)
    G = lineage_graph(sw)
    assert len(best_chain(G, best_tips(G)["h100"])) == 2   # this seed's best moved once
    assert render_tree(G).startswith("best/h100: 1 step, val_bpb ")

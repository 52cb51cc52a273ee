"""The lineage graph from ledger rows and git: merge commits with two parents, on_best, JSON."""
from __future__ import annotations

import json

import networkx as nx

from coordinator.decide.core import Coordinator
from coordinator.review.lineage import build_lineage
from coordinator.review.report.export import graph_text
from fake_runner import FakeAgent, baseline_text, drain_jobs, drop_pads, warm_up
from agents.messages import ExperimentRecord, PromotionConfig

HW = "cpu-fake"


def test_lineage_of_a_merge_a_conflict_and_a_simplification(tmp_path, redis_url):
    coord = Coordinator(tmp_path / "home", redis_url, PromotionConfig(sigma_prior=0.003, best_remeasures=0),
                        swarm_id="G", baseline_train_py=baseline_text())
    agents = [FakeAgent(f"a{i}", coord.repo.path, tmp_path / "wt", sigma=0.0005, seed=i) for i in range(3)]
    warm_up(coord, agents)
    r1, _ = agents[0].experiment(coord, coord.root, "A up", A=1)
    r2, _ = agents[1].experiment(coord, coord.root, "B up", B=1)
    r3, d3 = agents[2].experiment(coord, coord.root, "A half", A=0.5)  # alone, not better than best
    assert d3.decision == "conflict"
    drain_jobs(coord, agents)
    M = coord.decisions[r2.experiment_id].merge_commit
    c = agents[0].commit(M, drop_pads(agents[0].text_at(M)), "drop pads")
    rs = agents[0].record(c, M, val=coord.best(HW).val_bpb + 0.0002)
    assert coord.report(rs).decision.decision == "pending"  # a simplification is confirmed first
    drain_jobs(coord, agents)
    assert coord.decisions[rs.experiment_id].decision == "simplification"
    coord.report(ExperimentRecord(experiment_id="inv-1", agent="a2", program="p", hardware_class=HW,
                                  parent=c, commit=None, status="invalid", reason="bad edit"))

    G = build_lineage(coord.ledger.rows(), coord.repo.path)
    assert isinstance(G, nx.DiGraph) and nx.is_directed_acyclic_graph(G)
    root = coord.root
    assert G.nodes[root]["kind"] == "baseline" and G.nodes[root]["samples"] == 9
    assert G.nodes[M]["is_merge"] and G.nodes[M]["status"] == "keep" and G.nodes[M]["kind"] == "verify"
    assert G.edges[r1.commit, M]["first_parent"] is True
    assert G.edges[r2.commit, M]["first_parent"] is False
    assert G.edges[root, r1.commit]["first_parent"] is True
    for n in (root, r1.commit, r2.commit, M, c):
        assert G.nodes[n]["on_best"], n
    assert not G.nodes[r3.commit]["on_best"] and G.nodes[r3.commit]["status"] == "conflict"
    assert G.nodes[c]["simplification"] and not G.nodes[r1.commit]["simplification"]
    assert G.nodes[c]["invalid_children"] == 1
    assert G.nodes[r1.commit]["agent"] == "a0" and G.nodes[r1.commit]["hardware_class"] == HW

    data = json.loads(graph_text(G, "json"))
    assert {"nodes", "links", "directed"} <= set(data) and data["directed"] is True
    for n in data["nodes"]:
        assert {"id", "val_bpb", "status", "agent", "program", "hardware_class", "on_best"} <= set(n)
    assert all("first_parent" in e for e in data["links"])
    assert len(data["links"]) == G.number_of_edges()


def test_root_scores_stay_per_class_and_unrecorded_chains_reach_the_root(tmp_path, redis_url):
    # Invariant 5 in the graph: the root is run by every class; its val_bpb pools one class only.
    coord = Coordinator(tmp_path / "home", redis_url, PromotionConfig(sigma_prior=0.003),
                        swarm_id="H", baseline_train_py=baseline_text())
    a = FakeAgent("a0", coord.repo.path, tmp_path / "wt", sigma=0.0, seed=0)
    b = FakeAgent("b0", coord.repo.path, tmp_path / "wt2", sigma=0.0, seed=1)
    for agent, hw, v in ((a, "cpu-x", 2.0), (b, "gpu-y", 1.0)):
        job = coord.next_job(agent.name, hw)
        rec = agent.record(job.commit, job.parent, kind="baseline", job=job, val=v)
        coord.report(rec.model_copy(update={"hardware_class": hw}))
    # two commits no record names, then a recorded one on top of them
    u1 = a.commit(coord.root, a.text_at(coord.root) + "\n# u1\n", "unrecorded 1")
    u2 = a.commit(u1, a.text_at(u1) + "# u2\n", "unrecorded 2")
    top = a.commit(u2, a.text_at(u2) + "# top\n", "recorded")
    coord.report(a.record(top, u2, val=2.5).model_copy(update={"hardware_class": "cpu-x"}))

    G = build_lineage(coord.ledger.rows(), coord.repo.path)
    per = json.loads(G.nodes[coord.root]["val_bpb_by_class"])
    assert per == {"cpu-x": 2.0, "gpu-y": 1.0}
    assert G.nodes[coord.root]["val_bpb"] in (1.0, 2.0)
    assert nx.has_path(G, coord.root, top)
    assert G.nodes[u1]["status"] == "unrecorded" and G.has_edge(coord.root, u1)

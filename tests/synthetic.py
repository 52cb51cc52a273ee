"""A synthetic swarm history: ledger rows, a real bare git repo and run logs, for tests and benches.

The history follows the coordinator's rules closely enough to exercise every review output:
baseline samples, promotions, merges of work done on an older best (and ones that did not
stack or conflicted), crashes, timeouts, invalid edits, suspect promotions, two hardware classes.
"""
from __future__ import annotations

import logging
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

PROGRAMS = ("baseline", "optimizer", "architecture", "schedule", "simplify", "explore")
CONSTANTS = ("LR", "WARMUP", "DEPTH", "WIDTH", "BATCH", "DROPOUT", "WD", "CLIP")


def _train_py(consts: dict[str, int], extra: int) -> str:
    lines = ['"""Synthetic train.py."""', "import torch", "", "# --- hyperparameters"]
    lines += [f"{k} = {v}  # units" for k, v in consts.items()]
    lines += ["", "# --- model"] + [f"x{i} = {i}  # filler" for i in range(extra)]
    lines += ["", "def main():", "    print('val_bpb', 1.0)", ""]
    return "\n".join(lines)


@dataclass
class _Commit:
    sha_mark: int
    consts: dict[str, int]
    extra: int
    parents: list[int]
    message: str


@dataclass
class SyntheticSwarm:
    """What `make_swarm` built: the rows, the repo, SWARM_HOME and the commit shas."""

    rows: list[dict]
    repo_path: Path
    swarm_home: Path
    best: dict[str, str] = field(default_factory=dict)   # hardware_class -> tip sha
    root: str = ""

    def trained_commits(self) -> set[str]:
        """Distinct commits that were trained (crashed and timed-out runs count; invalid do not)."""
        return {r["commit"] for r in self.rows if r["commit"] and r["run_status"] != "invalid"}


def _git(repo: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], input=input, check=True,
                          capture_output=True).stdout.decode()


def make_swarm(home: Path, *, experiments: int = 60, agents: int = 4,
               hardware_classes: tuple[str, ...] = ("cpu-small",), seed: int = 0,
               log_lines: int = 60) -> SyntheticSwarm:
    """Build SWARM_HOME at `home`: repo.git (bare), runs/<id>/run.log and ledger rows.

    `experiments` counts agent experiments (baseline, confirm and verify runs come on top).
    Deterministic for a given seed. Commits are written with one `git fast-import`.
    """
    rng = random.Random(seed)
    home = Path(home)
    repo = home / "repo.git"
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q", "--bare")
    commits: list[_Commit] = []

    def new_commit(consts, extra, parents, message) -> int:
        commits.append(_Commit(len(commits) + 1, dict(consts), extra, list(parents), message))
        return len(commits)

    base_consts = {k: 10 + i for i, k in enumerate(CONSTANTS)}
    root = new_commit(base_consts, 6, [], "baseline")
    rows: list[dict] = []
    t = 1_700_000_000.0
    agent_names = [f"agent-{chr(ord('a') + i)}" for i in range(agents)]
    # each agent sticks to one hardware class and one program, as real ones do
    agent_hw = {a: hardware_classes[i % len(hardware_classes)] for i, a in enumerate(agent_names)}
    agent_prog = {a: PROGRAMS[i % len(PROGRAMS)] for i, a in enumerate(agent_names)}
    sigma, margin = 0.004, 0.008
    # per hardware class: best mark, its score, history of best marks, and constants per mark
    state = {hw: {"best": root, "bpb": 2.50 + 0.05 * j, "bpb0": 2.50 + 0.05 * j, "history": [root]}
             for j, hw in enumerate(hardware_classes)}
    bpb_of: dict[int, float] = {root: 0.0}  # absolute val_bpb per mark (root: per class below)
    head = {a: root for a in agent_names}
    n = 0

    def row(agent, **kw) -> dict:
        nonlocal t, n
        t += rng.uniform(20, 60)
        n += 1
        hw = agent_hw[agent]
        r = dict(experiment_id=f"{agent}-{int(t * 1000)}-{n:06x}", swarm_id="synthetic",
                 kind="experiment", agent=agent, program=agent_prog[agent], backend="mutate",
                 seed=n, hardware_class=hw, parent=None, commit=None, description="",
                 status="ok", reason=None, val_bpb=None, confirm_bpb=None, parent_val_bpb=None,
                 delta=None, lines_added=0, lines_removed=0, fix_attempts=0, prompt_tokens=900,
                 completion_tokens=200, cost_usd=round(rng.uniform(0.001, 0.02), 5),
                 started_at=t - 300.0, finished_at=t, job_id=None, training_seconds=300.0,
                 total_seconds=320.0, memory_gb=1.2, decision="discard",
                 decision_reason="", best_after=None, margin=margin, sigma=sigma, samples=1,
                 suspect=False, merge_commit=None)
        r.update(kw)
        return r

    for a in agent_names:  # the first round: the baseline on every agent seeds sigma
        st = state[agent_hw[a]]
        rows.append(row(a, kind="baseline", program="baseline", parent=sha_ph(root), commit=sha_ph(root),
                        description="baseline", val_bpb=st["bpb"] + rng.gauss(0, sigma),
                        decision="sample"))
    for i in range(experiments):
        a = agent_names[i % agents]
        hw = agent_hw[a]
        st = state[hw]
        parent = head[a]
        pc = commits[parent - 1]
        key = rng.choice(CONSTANTS)
        consts = dict(pc.consts)
        consts[key] = pc.consts[key] + rng.choice((-3, -2, -1, 1, 2, 3))
        extra = max(0, pc.extra + rng.choice((-1, 0, 0, 1, 2)))
        desc = f"{key} {pc.consts[key]} -> {consts[key]}"
        added = 1 + max(0, extra - pc.extra)
        removed = 1 + max(0, pc.extra - extra)
        parent_bpb = st["bpb0"] if parent == root else bpb_of[parent]
        u = rng.random()
        if u < 0.04:
            rows.append(row(a, parent=sha_ph(parent), description=desc, status="invalid",
                            reason="edit touches prepare.py", decision="invalid",
                            training_seconds=None, total_seconds=1.0))
            continue
        mark = new_commit(consts, extra, [parent], desc)
        if u < 0.14:
            status = "crash" if u < 0.10 else "timeout"
            rows.append(row(a, parent=sha_ph(parent), commit=sha_ph(mark), description=desc,
                            status=status, reason=f"{status} in step 12", decision=status,
                            lines_added=added, lines_removed=removed,
                            training_seconds=None if status == "crash" else 600.0))
            continue
        gain = rng.gauss(0.0, 0.012)
        bpb = parent_bpb - gain
        bpb_of[mark] = bpb
        r = row(a, parent=sha_ph(parent), commit=sha_ph(mark), description=desc, val_bpb=bpb,
                confirm_bpb=bpb + rng.gauss(0, sigma), parent_val_bpb=parent_bpb, delta=gain,
                lines_added=added, lines_removed=removed)
        rows.append(r)
        if gain <= margin:
            # now and then an agent adopts the newest best (else it keeps its older base,
            # which is what makes merges happen)
            if rng.random() < 0.3:
                head[a] = st["best"]
            continue
        if parent == st["best"]:
            st["best"] = mark
            st["history"].append(mark)
            st["bpb"] = bpb
            r.update(decision="promote", best_after=sha_ph(mark), suspect=rng.random() < 0.1)
            head[a] = mark
            continue
        # work done on an older best: apply its one change onto the current best
        best_c = commits[st["best"] - 1]
        changed_since = {k for k in CONSTANTS if best_c.consts[k] != pc.consts[k]}
        if key in changed_since:
            r.update(decision="conflict", decision_reason=f"{key} changed on best")
            head[a] = st["best"]
            continue
        merged = dict(best_c.consts)
        merged[key] = consts[key]
        mmark = new_commit(merged, best_c.extra, [st["best"], mark], f"merge: {desc}")
        vgain = gain * rng.uniform(-0.5, 1.0)
        vr = row(a, kind="verify", parent=sha_ph(st["best"]), commit=sha_ph(mmark),
                 description=f"verify merge of {desc}", val_bpb=st["bpb"] - vgain,
                 parent_val_bpb=st["bpb"], delta=vgain, decision="sample", job_id=f"job-{n}")
        rows.append(vr)
        bpb_of[mmark] = st["bpb"] - vgain
        if vgain > margin:
            st["best"] = mmark
            st["history"].append(mmark)
            st["bpb"] -= vgain
            r.update(decision="merge", best_after=sha_ph(mmark), merge_commit=sha_ph(mmark))
        else:
            r.update(decision="did-not-stack", merge_commit=sha_ph(mmark))
        head[a] = st["best"]

    shas = _fast_import(repo, commits, state)
    for r in rows:
        for k in ("parent", "commit", "best_after", "merge_commit"):
            if isinstance(r[k], _Placeholder):
                r[k] = shas[r[k].mark]
    for r in rows:
        _as_ledger_row(r)
    _write_logs(home, rows, rng, log_lines)
    return SyntheticSwarm(rows=rows, repo_path=repo, swarm_home=home,
                          best={hw: shas[st["best"]] for hw, st in state.items()},
                          root=shas[root])


_KEEP = ("promote", "merge", "simplification")


def _as_ledger_row(r: dict) -> None:
    """Rename to coordinator.state.ledger's row schema: `run_status` is the record's status, `status`
    the original's TSV vocabulary (keep/discard/crash + ours), `decision_delta` the decision's."""
    r["run_status"] = r.pop("status")
    d = r["decision"]
    r["status"] = "keep" if d in _KEEP else d
    r["decision_delta"] = r["delta"] if r["kind"] == "experiment" else None
    r.update(best_before=None, decided_at=r["finished_at"], simplification=d == "simplification",
             steps=None, tokens=None, num_params=None)


@dataclass(frozen=True)
class _Placeholder:
    mark: int


def sha_ph(mark: int) -> _Placeholder:
    return _Placeholder(mark)


def _fast_import(repo: Path, commits: list[_Commit], state: dict) -> dict[int, str]:
    """Write every commit in one fast-import stream; return mark -> sha."""
    out = []
    when = 1_700_000_000
    for c in commits:
        data = _train_py(c.consts, c.extra).encode()
        msg = c.message.encode()
        out.append(b"commit refs/heads/tmp\nmark :%d\n" % c.sha_mark)
        out.append(b"committer swarm <swarm@localhost> %d +0000\n" % (when + c.sha_mark))
        out.append(b"data %d\n%s\n" % (len(msg), msg))
        if c.parents:
            out.append(b"from :%d\n" % c.parents[0])
            for p in c.parents[1:]:
                out.append(b"merge :%d\n" % p)
        else:
            out.append(b"deleteall\n")
        # full content each time (deleteall + M) so the tree is exactly train.py
        out.append(b"deleteall\nM 100644 inline train.py\ndata %d\n%s\n" % (len(data), data))
    marks = repo / "marks"
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet", f"--export-marks={marks}"],
                   input=b"".join(out), check=True, capture_output=True)
    shas = {}
    for line in marks.read_text().splitlines():
        m, sha = line.split()
        shas[int(m[1:])] = sha
    marks.unlink()
    refs = [f"update refs/heads/best/{hw} {shas[st['best']]}" for hw, st in state.items()]
    for i in range(1, len(commits) + 1):
        refs.append(f"update refs/experiments/c{i} {shas[i]}")
    refs.append(f"update refs/swarm/root {shas[1]}")
    refs.append(f"update refs/heads/main {shas[1]}")
    refs.append("delete refs/heads/tmp")
    subprocess.run(["git", "-C", str(repo), "update-ref", "--stdin"],
                   input="\n".join(refs).encode() + b"\n", check=True, capture_output=True)
    return shas


def _write_logs(home: Path, rows: list[dict], rng: random.Random, n: int) -> None:
    for r in rows:
        if r["run_status"] == "invalid":
            continue
        d = home / "runs" / r["experiment_id"]
        d.mkdir(parents=True, exist_ok=True)
        lines = [f"step {i:05d} | loss {3.0 - i * 0.01:.4f} | {r['experiment_id']}" for i in range(n)]
        if r["run_status"] == "crash":
            lines.append("RuntimeError: shape mismatch in attention")
        elif r["run_status"] == "timeout":
            lines.append("killed: hard time limit")
        else:
            lines.append(f"val_bpb: {r['val_bpb']:.6f}")
        atomic_write(d / "run.log", "\n".join(lines) + "\n")


def lineage_graph(sw: SyntheticSwarm) -> nx.DiGraph:
    """The lineage graph: coordinator.review.lineage.build_lineage when present, else our own build."""
    try:
        from coordinator.review.lineage import build_lineage
    except ImportError:
        return fallback_lineage(sw.rows, sw.repo_path)
    return build_lineage(sw.rows, sw.repo_path)


_MAIN_KIND = {"experiment": 0, "verify": 1, "baseline": 2, "confirm": 3}


def fallback_lineage(rows: list[dict], repo_path: Path) -> nx.DiGraph:
    """A lineage DiGraph with the attributes coordinator.review.lineage documents, built from rows + git."""
    G = nx.DiGraph()
    by_commit: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("commit") and r.get("run_status") != "invalid":
            by_commit.setdefault(r["commit"], []).append(r)
    G.graph["invalid"] = [r for r in rows if r.get("run_status") == "invalid" or not r.get("commit")]
    parents = _parents(repo_path, list(by_commit))
    best_tips = {}
    for ref in _git(repo_path, "for-each-ref", "--format=%(refname) %(objectname)",
                    "refs/heads/best").splitlines():
        name, sha = ref.split()
        best_tips[name.split("best/", 1)[1]] = sha
    G.graph["best"] = dict(best_tips)
    on_best = set()
    for tip in best_tips.values():
        on_best.update(_git(repo_path, "rev-list", "--first-parent", tip).split())
    merged_by = {r["merge_commit"]: r for r in rows if r.get("merge_commit")}
    for sha, recs in by_commit.items():
        main = min(recs, key=lambda r: _MAIN_KIND.get(r.get("kind"), 9))
        # never average across hardware classes: the shared root was run on every class
        ok = [r["val_bpb"] for r in recs if r.get("val_bpb") is not None
              and r["hardware_class"] == main["hardware_class"]]
        decision = main.get("decision")
        src = main
        if sha in merged_by:  # a merge commit: it inherits the candidate's identity
            src = merged_by[sha]
            decision = "merge" if src.get("decision") == "merge" else src.get("decision")
        G.add_node(sha, val_bpb=sum(ok) / len(ok) if ok else None, samples=len(ok),
                   status=main["run_status"], decision=decision, agent=src["agent"],
                   program=src["program"], hardware_class=main["hardware_class"],
                   description=src.get("description", ""), experiment_id=main["experiment_id"],
                   kind=main.get("kind"), delta=main.get("decision_delta"),
                   suspect=bool(src.get("suspect")),
                   simplification=decision == "simplification",
                   is_merge=len(parents.get(sha, [])) > 1, on_best=sha in on_best,
                   started_at=main.get("started_at"), finished_at=main.get("finished_at"),
                   lines_added=src.get("lines_added", 0), lines_removed=src.get("lines_removed", 0))
    for sha, ps in parents.items():
        for i, p in enumerate(ps):
            if p in G and sha in G:
                G.add_edge(p, sha, first_parent=i == 0)
    return G


def _parents(repo: Path, shas: list[str]) -> dict[str, list[str]]:
    out = _git(repo, "rev-list", "--no-walk", "--parents", "--stdin", input="\n".join(shas).encode())
    res = {}
    for line in out.splitlines():
        parts = line.split()
        res[parts[0]] = parts[1:]
    return res

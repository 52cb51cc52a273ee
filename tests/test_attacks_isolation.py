"""Isolation attacks: hostile code tries to leave the sandbox, keep a process alive, rewrite the
apparatus or the data, read secrets or held-out data, reach the network, exhaust the machine,
or get the agent's git to run its code. Each runs through the real code path (the runner and
its sandbox; the agent's and coordinator's git) and asserts that nothing persisted."""
from __future__ import annotations

import hashlib
import os
import site
import socket
import time
from pathlib import Path

import pytest

from test_runner import TINY, write

import trainer
from agents.worktree import Worktree
from coordinator.review.report.gitdata import train_py_diffs
from coordinator.state.repo import ResearchRepo

BASELINE = "print('baseline')\n"

# --- helpers ---------------------------------------------------------------------------------


def tree_digest(root: Path) -> str:
    """One hash over every file's path, mode and content under `root` (symlinks by target)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            if "__pycache__" in p.parts:
                continue
            h.update(str(p.relative_to(root)).encode())
            try:
                st = p.lstat()
                h.update(oct(st.st_mode).encode())
                h.update(os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            except OSError:
                h.update(b"?")
    return h.hexdigest()


def all_pids() -> set[int]:
    return {int(d) for d in os.listdir("/proc") if d.isdigit()}


def descendants_of_me() -> set[int]:
    """Live processes whose ancestry leads to this test process (children, grandchildren...),
    or that left this process's ancestry for init (a daemonised survivor) but carry our marker."""
    me, out = os.getpid(), set()
    for pid in all_pids():
        p = pid
        for _ in range(64):
            try:
                p = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
            if p == me:
                out.add(pid)
                break
            if p <= 1:
                break
    return out


def processes_with(marker: str) -> list[int]:
    """PIDs (anywhere on the machine) whose command line contains `marker`."""
    found = []
    for pid in all_pids():
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- 10. git hooks and fsmonitor planted in the research repo ---------------------------------

HOOKS = ("pre-commit", "post-commit", "commit-msg", "prepare-commit-msg", "post-checkout", "post-merge",
         "post-rewrite", "reference-transaction", "pre-auto-gc", "post-index-change")


def plant(git_dir: Path, markers: Path, tag: str) -> None:
    """Hooks, a hooksPath and an fsmonitor that each write a marker file when git runs them."""
    hooks = git_dir / "hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    evil = markers / f"evil-hooks-{tag}"
    evil.mkdir(parents=True, exist_ok=True)
    for d in (hooks, evil):
        for h in HOOKS:
            f = d / h
            f.write_text(f"#!/bin/sh\ntouch {markers}/{tag}-{d.name}-{h}\nexit 0\n")
            f.chmod(0o755)
    mon = markers / f"fsmonitor-{tag}"
    mon.write_text(f"#!/bin/sh\ntouch {markers}/{tag}-fsmonitor\nexit 1\n")
    mon.chmod(0o755)
    return mon, evil


def test_git_never_runs_planted_hooks_or_fsmonitor(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    repo = ResearchRepo(tmp_path / "repo.git")
    root = repo.create(BASELINE)
    mon, evil = plant(repo.path, markers, "repo")
    os.system(f"git --git-dir {repo.path} config core.fsmonitor {mon}")
    os.system(f"git --git-dir {repo.path} config extensions.worktreeConfig true")

    wt = Worktree(tmp_path / "wt" / "a", repo.path, "a")
    wt.open(root)
    # the worktree's own git dir: a per-worktree config naming a hooks dir and an fsmonitor
    wt_git = repo.path / "worktrees" / "a"
    assert wt_git.is_dir()
    mon2, evil2 = plant(wt_git, markers, "wt")
    (wt_git / "config.worktree").write_text(f"[core]\n\tbare = false\n\tfsmonitor = {mon2}\n"
                                           f"\thooksPath = {evil2}\n")

    # the agent's paths: commit, reset, clean, status, bundle, reopen
    c1 = wt.commit("print('one')\n", "one", root)
    assert wt.is_clean()
    c2 = wt.commit("print('two')\n", "two", c1)
    wt.reset_hard(c1)
    (wt.path / "junk.txt").write_text("x")
    wt.clean()
    data = wt.bundle(c2, basis=root)
    Worktree(tmp_path / "wt" / "a", repo.path, "a").open(root)

    # the coordinator's paths: refs (compare-and-swap and plain), merges, bundles, report diffs
    assert repo.update_ref("refs/heads/best-cpu", c1, None)
    repo.set_ref("refs/heads/best-cpu", c2)
    merged, clean = repo.merge_file(root, c1, c2)
    m = repo.commit_tree(merged, [c2, c1], "merge", base=c2)
    assert repo.update_ref("refs/heads/best-cpu", m, c2)
    repo.fetch_bundle(data)
    repo.fetch_bundle(repo.bundle(m))
    assert repo.is_ancestor(c1, m) and repo.first_parent_history("refs/heads/best-cpu")
    assert train_py_diffs(repo.path, [(root, c1), (c1, c2)])

    # a clone on another node: hooks planted in its .git
    clone = Worktree(tmp_path / "node2" / "b", tmp_path / "not-here.git", "b")
    clone.open(m, fetch=lambda commit: repo.bundle(commit))
    mon3, _ = plant(clone.path / ".git", markers, "clone")
    os.system(f"git -C {clone.path} config core.fsmonitor {mon3}")
    c3 = clone.commit("print('three')\n", "three", m)
    clone.reset_hard(m)
    clone.is_clean()
    clone.bundle(c3, basis=m)

    fired = sorted(p.name for p in markers.iterdir() if p.is_file() and not p.name.startswith("fsmonitor-"))
    assert fired == [], f"git ran planted code: {fired}"

"""What the report reads besides the ledger: train.py diffs from the research repo, log tails.

All diffs come from one `git diff-tree --stdin` process, so 1,000 commits cost one fork.
"""
from __future__ import annotations

import logging
import re
import subprocess
from collections import deque
from pathlib import Path

from agents.worktree import GIT

log = logging.getLogger(__name__)

_HEADER = re.compile(r"^[0-9a-f]{40}( \(from [0-9a-f]{40}\))?$")
MAX_DIFF_CHARS = 20_000   # a diff longer than this is cut: the page stays light


class GitDataError(RuntimeError):
    """The research repo could not be read."""


def train_py_diffs(repo_path: Path, pairs: list[tuple[str, str]],
                   editable: tuple[str, ...] = ("train.py",)) -> dict[tuple[str, str], str]:
    """(parent, child) -> unified diff of the editable file(s), for every pair, in one git call.

    A pair whose commits git does not know maps to a one-line note instead of a diff.
    """
    if not pairs:
        return {}
    stdin = "".join(f"{child} {parent}\n" for parent, child in pairs)
    proc = subprocess.run(
        [*GIT, "-C", str(repo_path), "diff-tree", "--stdin", "--always", "-p", "--no-color",
         "--no-ext-diff", "--", *editable],
        input=stdin.encode(), capture_output=True)
    if proc.returncode != 0 and not proc.stdout:
        raise GitDataError(f"git diff-tree failed in {repo_path}: "
                           f"{proc.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    chunks: list[list[str]] = []
    for line in proc.stdout.decode(errors="replace").split("\n"):
        if _HEADER.match(line):
            chunks.append([])
        elif chunks:
            chunks[-1].append(line)
    out: dict[tuple[str, str], str] = {}
    if len(chunks) != len(pairs):
        # git skips pairs it cannot resolve; fall back to one call per pair so none is mislabelled
        log.warning("diff-tree answered %d of %d pairs; diffing one by one", len(chunks), len(pairs))
        for p in pairs:
            out.update(_one_by_one(repo_path, p, editable))
        return out
    for pair, lines in zip(pairs, chunks):
        text = "\n".join(lines).strip("\n")
        if len(text) > MAX_DIFF_CHARS:
            text = text[:MAX_DIFF_CHARS] + "\n... (diff cut)"
        out[pair] = text or "(no change to train.py)"
    return out


def _one_by_one(repo_path: Path, pair: tuple[str, str], editable) -> dict:
    parent, child = pair
    proc = subprocess.run([*GIT, "-C", str(repo_path), "diff", "--no-color", parent, child,
                           "--", *editable], capture_output=True)
    if proc.returncode != 0:
        return {pair: f"(no diff: {short_err(proc.stderr)})"}
    return {pair: proc.stdout.decode(errors="replace").strip("\n") or "(no change to train.py)"}


def short_err(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "git error"


def log_tail(swarm_home: Path, row: dict, lines: int = 40) -> str:
    """The last lines of an experiment's run.log ('' when there is none)."""
    candidates = []
    if row.get("log_path"):
        p = Path(row["log_path"])
        candidates.append(p if p.is_absolute() else Path(swarm_home) / p)
    if row.get("experiment_id"):
        candidates.append(Path(swarm_home) / "runs" / row["experiment_id"] / "run.log")
    for p in candidates:
        try:
            with open(p, errors="replace") as f:
                return "".join(deque(f, maxlen=lines))
        except OSError:
            continue
    return ""

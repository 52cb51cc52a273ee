"""The agent's git worktree of the research repo (or its own clone on another node): commit
an edit, reset to a parent, show a file at a commit, move commits as git bundles."""
from __future__ import annotations

import hashlib
import logging
import subprocess
import tempfile
from pathlib import Path

import tenacity

from agents.edits import EDITABLE
from agents.errors import WorktreeError

log = logging.getLogger(__name__)

IDENTITY = {"user.name": "autoresearch-swarm", "user.email": "swarm@localhost"}

# Every git call the agent or the coordinator makes starts with this. Git must never run code
# planted in a repo or a worktree: hooks (`.git/hooks`, a `core.hooksPath` in any config file)
# and `core.fsmonitor` (run by status, add, commit and reset) execute with the caller's whole
# environment, secrets included. `-c` beats every config file, per-worktree ones too.
GIT = ("git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
       "-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false", "-c", "protocol.ext.allow=never",
       "-c", "core.pager=cat")


def object_id(kind: str, body: bytes) -> str:
    """The git object id of `body` as a `kind` object (what `git hash-object` prints): an
    agent names the train.py it is about to train by its blob id, as the coordinator does."""
    return hashlib.sha1(f"{kind} {len(body)}".encode() + b"\0" + body).hexdigest()


class _Locked(Exception):
    """Another agent holds a lock file in the shared repo."""


# Up to 20 tries, 0.1 s then 0.05 s longer each time (about 11.5 s in all).
_LOCK_RETRY = dict(stop=tenacity.stop_after_attempt(20), wait=tenacity.wait_incrementing(0.1, 0.05),
                   retry=tenacity.retry_if_exception_type(_Locked), reraise=True)


def git(cwd: Path, *args: str, input: bytes | None = None, check: bool = True) -> str:
    """Run git; retries briefly when another agent holds a lock on the shared repo."""
    def once() -> str:
        p = subprocess.run([*GIT, *args], cwd=cwd, input=input, capture_output=True)
        err = p.stderr.decode(errors="replace")
        if p.returncode == 0 or not check:
            return p.stdout.decode(errors="replace")
        if ".lock" in err and "exists" in err or "could not lock" in err:
            raise _Locked()
        first = next((ln for ln in err.splitlines() if ln.strip()), f"exit {p.returncode}")
        raise WorktreeError(f"git {' '.join(args[:2])} in {cwd}: {first}")

    try:
        return tenacity.Retrying(**_LOCK_RETRY)(once)
    except _Locked:
        raise WorktreeError(f"git {' '.join(args[:2])} in {cwd}: lock held too long") from None


def ensure_identity(repo: Path) -> None:
    """A fresh machine has no git identity: set one in the repo config when it has none."""
    for key, value in IDENTITY.items():
        if not git(repo, "config", "--get", key, check=False).strip():
            git(repo, "config", key, value)


class Worktree:
    """One agent's checkout on branch `agents/<name>`: a worktree of the shared bare repo when
    `repo` exists on this node (`shared` True), else a clone fed by bundles."""

    def __init__(self, path: Path, repo: Path, name: str):
        self.path = Path(path)
        self.repo = Path(repo)
        self.branch = f"agents/{name}"
        self.shared = self.repo.is_dir()

    # --- setup ---------------------------------------------------------------------------
    def open(self, start: str | None, fetch=None) -> None:
        """Create (or reuse) the checkout. `start`: commit for a new branch (None: the repo's
        HEAD). `fetch(commit) -> bundle bytes` is used when the repo is not on this node."""
        if (self.path / ".git").exists():
            self.clean()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.shared:
            ensure_identity(self.repo)
            git(self.repo, "worktree", "prune")
            exists = git(self.repo, "rev-parse", "--verify", "-q", f"refs/heads/{self.branch}",
                         check=False).strip()
            if exists:
                git(self.repo, "worktree", "add", "-f", str(self.path), self.branch)
            else:
                git(self.repo, "worktree", "add", "-b", self.branch, str(self.path),
                    start or "HEAD")
        else:
            if fetch is None:
                raise WorktreeError(f"{self.repo} is not on this node and no fetch was given")
            git(self.path.parent, "init", "-q", str(self.path))
            ensure_identity(self.path)
            commit = self.unbundle(fetch(start or "HEAD"))
            git(self.path, "checkout", "-q", "-B", self.branch, start or commit)

    # --- queries -------------------------------------------------------------------------
    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD").strip()

    def source(self) -> str:
        return (self.path / EDITABLE).read_text(encoding="utf-8")

    def show(self, commit: str, path: str = EDITABLE) -> str:
        return git(self.path, "show", f"{commit}:{path}")

    def has(self, commit: str) -> bool:
        return subprocess.run([*GIT, "cat-file", "-e", f"{commit}^{{commit}}"],
                              cwd=self.path, capture_output=True).returncode == 0

    def is_clean(self) -> bool:
        return not git(self.path, "status", "--porcelain").strip()

    # --- changes -------------------------------------------------------------------------
    def commit(self, source: str, message: str, parent: str) -> str:
        """Commit `source` as the editable file on top of `parent`; returns the new commit.
        HEAD is left at the new commit."""
        self.reset_hard(parent)
        (self.path / EDITABLE).write_text(source, encoding="utf-8")
        git(self.path, "add", "--", EDITABLE)
        git(self.path, "commit", "-q", "--no-verify", "-m", message)
        return self.head()

    def reset_hard(self, commit: str) -> None:
        git(self.path, "reset", "--hard", "-q", commit)
        git(self.path, "clean", "-fdq")

    def clean(self) -> None:
        """Drop any uncommitted change or untracked file (a dead agent's leftovers)."""
        git(self.path, "reset", "--hard", "-q")
        git(self.path, "clean", "-fdq")

    # --- bundles (commits between nodes) -------------------------------------------------
    def bundle(self, commit: str, basis: str | None = None) -> bytes:
        """A git bundle holding `commit` (and its history, minus `basis`'s when given)."""
        ref = f"refs/bundles/{commit}"
        git(self.path, "update-ref", ref, commit)
        try:
            with tempfile.TemporaryDirectory() as d:
                out = Path(d) / "b.bundle"
                git(self.path, "bundle", "create", "-q", str(out), ref,
                    *([f"^{basis}"] if basis else []))
                return out.read_bytes()
        finally:
            git(self.path, "update-ref", "-d", ref)

    def unbundle(self, data: bytes) -> str:
        """Fetch a bundle's objects into this checkout; returns the commit it carries."""
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "in.bundle"
            path.write_bytes(data)
            heads = git(self.path, "bundle", "list-heads", str(path)).split()
            git(self.path, "fetch", "-q", str(path), "+refs/*:refs/remotes/bundle/*")
            return heads[0]

    def ensure(self, commit: str, fetch) -> None:
        """Make `commit` present locally (a clone fetches a bundle for it)."""
        if self.shared or self.has(commit):
            return
        self.unbundle(fetch(commit))

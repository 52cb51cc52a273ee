"""The coordinator's bare research repo: git plumbing for best refs, experiment refs, merges, bundles.

Only `train.py` is ever edited, so merges are a 3-way `git merge-file` of that one file written
back into a tree with `git mktree`; no worktree is needed in the bare repo.
"""
from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

from agents.edits import EDITABLE
from agents.worktree import GIT, object_id
from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

ZERO = "0" * 40
IDENTITY = "swarm-coordinator <coordinator@swarm.local>"
_REF_LEAF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$")


class RepoError(RuntimeError):
    """A git operation on the research repo failed."""


class _CatFile:
    """One long-running `git cat-file --batch`: reading an object costs a pipe round trip, not a fork
    (a decision reads several objects; forking from a big process such as a Ray worker is slow)."""

    def __init__(self, git_dir: Path):
        self.git_dir = git_dir
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([*GIT, "--git-dir", str(self.git_dir), "cat-file", "--batch"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return self.proc

    def read(self, spec: str) -> tuple[str, str, bytes] | None:
        """(sha, type, content) of an object spec such as `<commit>:train.py`, or None if missing."""
        return self.read_many([spec])[0]

    def read_many(self, specs: list[str]) -> list[tuple[str, str, bytes] | None]:
        """read() of several specs in one pipe round trip (the answers come back in order)."""
        ok = [bool(s) and "\n" not in s and s.strip() == s for s in specs]
        asked = [s for s, good in zip(specs, ok) if good]
        got: list[tuple[str, str, bytes] | None] = []
        if asked:
            with self.lock:
                p = self._start()
                p.stdin.write("".join(s + "\n" for s in asked).encode())
                p.stdin.flush()
                for _ in asked:
                    header = p.stdout.readline().decode().split()
                    if len(header) != 3:  # "<spec> missing" / "ambiguous"
                        got.append(None)
                        continue
                    sha, typ, size = header
                    data = p.stdout.read(int(size))
                    p.stdout.read(1)
                    got.append((sha, typ, data))
        it = iter(got)
        return [next(it) if good else None for good in ok]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        self.proc = None


class ResearchRepo:
    """A bare git repo at `path` (normally SWARM_HOME/repo.git)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._cat = _CatFile(self.path)
        self._ref_dirs: set[str] = set()

    def close(self) -> None:
        self._cat.close()

    def __del__(self):
        try:
            self._cat.close()
        except Exception:
            pass

    # -- plumbing -----------------------------------------------------------------------------
    def git(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        out = self.git_bytes(*args, input=input, check=check)
        return out.decode("utf-8", "replace").strip()

    def git_bytes(self, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
        env = dict(os.environ)
        # The repo's own config names the coordinator; don't let a user's global hooks interfere.
        env.setdefault("GIT_TERMINAL_PROMPT", "0")
        p = subprocess.run([*GIT, "--git-dir", str(self.path), *args], input=input,
                           capture_output=True, env=env)
        if check and p.returncode != 0:
            msg = p.stderr.decode("utf-8", "replace").strip().splitlines()
            raise RepoError(f"git {args[0]} failed: {msg[-1] if msg else p.returncode}")
        return p.stdout

    def exists(self) -> bool:
        return (self.path / "HEAD").exists()

    def create(self, baseline_text: str) -> str:
        """Create the bare repo with one root commit holding `baseline_text` as train.py.

        Idempotent: an existing repo is kept and its root commit returned.
        """
        if self.exists() and self.ref("refs/swarm/root"):
            return self.root()
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run([*GIT, "init", "--bare", "-q", "-b", "main", str(self.path)], check=True,
                       capture_output=True)
        self.git("config", "user.name", "swarm-coordinator")
        self.git("config", "user.email", "coordinator@swarm.local")
        # Agents fetch bundles and we keep every experiment ref: never prune.
        self.git("config", "gc.auto", "0")
        root = self.commit_tree(baseline_text, [], "baseline train.py")
        self.git("update-ref", "refs/swarm/root", root)
        self.git("update-ref", "refs/heads/main", root)
        log.info("created research repo %s (root %s)", self.path, root[:10])
        return root

    def root(self) -> str:
        r = self.ref("refs/swarm/root")
        if r is None:
            raise RepoError(f"{self.path} has no root commit (not a swarm research repo)")
        return r

    # -- reading ------------------------------------------------------------------------------
    def ref(self, name: str) -> str | None:
        p = subprocess.run([*GIT, "--git-dir", str(self.path), "rev-parse", "-q", "--verify",
                            f"{name}^{{commit}}"], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None

    def refs(self, prefix: str) -> dict[str, str]:
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        return dict(line.split() for line in out.splitlines() if line)

    def has_commit(self, sha: str | None) -> bool:
        if not sha:
            return False
        obj = self._cat.read(sha)
        return obj is not None and obj[1] == "commit"

    def _file(self, commit: str, path: str) -> tuple[str, str, bytes]:
        obj = self._cat.read(f"{commit}:{path}")
        if obj is None or obj[1] != "blob":
            raise RepoError(f"{commit[:10]} has no {path}")
        return obj

    def show(self, commit: str, path: str = EDITABLE) -> str:
        return self._file(commit, path)[2].decode("utf-8", "replace")

    def parents(self, commit: str) -> list[str]:
        # Parsed from the commit object through the long-running cat-file: the lineage asks this
        # for every commit, and a fork per commit cost ~8 s on 1,000 commits.
        obj = self._cat.read(commit)
        if obj is None or obj[1] != "commit":
            raise RepoError(f"{commit[:10]} is not a commit in {self.path}")
        parents = []
        for line in obj[2].split(b"\n"):
            if not line:
                break  # the header ends at the first blank line
            if line.startswith(b"parent "):
                parents.append(line[7:].decode())
        return parents

    def is_ancestor(self, a: str, b: str) -> bool:
        """True when `a` is `b` or an ancestor of it."""
        p = subprocess.run([*GIT, "--git-dir", str(self.path), "merge-base", "--is-ancestor", a, b],
                           capture_output=True)
        return p.returncode == 0

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of two commits (None when they share no history)."""
        p = subprocess.run(["git", "--git-dir", str(self.path), "merge-base", a, b], capture_output=True)
        return p.stdout.decode().strip() or None if p.returncode == 0 else None

    def first_parent_history(self, ref: str) -> list[str]:
        return self.git("rev-list", "--first-parent", ref).split()

    def commit_files(self, commits: list[str],
                     path: str = EDITABLE) -> list[tuple[bool, str | None, bytes | None]]:
        """For each commit, in one cat-file round trip: (is a commit here, blob id of `path` in
        it, its bytes); the blob parts are None when the commit is unknown or has no `path`."""
        got = self._cat.read_many([x for c in commits for x in (c, f"{c}:{path}")])
        out: list[tuple[bool, str | None, bytes | None]] = []
        for c, f in zip(got[::2], got[1::2]):
            if c is None or c[1] != "commit":
                out.append((False, None, None))
            elif f is None or f[1] != "blob":
                out.append((True, None, None))
            else:
                out.append((True, f[0], f[2]))
        return out

    # -- writing ------------------------------------------------------------------------------
    def write_object(self, kind: str, body: bytes) -> str:
        """Store a loose object (what `git hash-object -w` does) without a fork: the merge path
        wrote three objects through three forks, ~3 ms each from a large process."""
        data = f"{kind} {len(body)}".encode() + b"\0" + body
        sha = object_id(kind, body)
        f = self.path / "objects" / sha[:2] / sha[2:]
        if not f.exists():
            atomic_write(f, zlib.compress(data, 1))
        return sha

    def _tree_entries(self, commit: str) -> list[tuple[bytes, bytes, bytes]]:
        """(mode, name, 20-byte sha) of every entry of `commit`'s root tree."""
        obj = self._cat.read(f"{commit}^{{tree}}")
        if obj is None or obj[1] != "tree":
            raise RepoError(f"{commit[:10]} is not a commit in {self.path}")
        data, out, i = obj[2], [], 0
        while i < len(data):
            sp = data.index(b" ", i)
            nul = data.index(b"\0", sp)
            out.append((data[i:sp], data[sp + 1:nul], data[nul + 1:nul + 21]))
            i = nul + 21
        return out

    def commit_tree(self, text: str, parents: list[str], message: str, base: str | None = None) -> str:
        """A commit whose tree is `base`'s tree (or empty) with train.py = text."""
        blob = self.write_object("blob", text.encode())
        entries = [e for e in (self._tree_entries(base) if base is not None else [])
                   if e[1] != EDITABLE.encode()]
        entries.append((b"100644", EDITABLE.encode(), bytes.fromhex(blob)))
        # git's tree order: by name, a directory compared as if its name ended in "/".
        entries.sort(key=lambda e: e[1] + (b"/" if e[0] == b"40000" else b""))
        tree = self.write_object("tree", b"".join(m + b" " + n + b"\0" + sha for m, n, sha in entries))
        when = f"{int(time.time())} +0000"
        head = [f"tree {tree}"] + [f"parent {p}" for p in parents] + [
            f"author {IDENTITY} {when}", f"committer {IDENTITY} {when}"]
        return self.write_object("commit", ("\n".join(head) + "\n\n" + message.rstrip("\n") + "\n").encode())

    def update_ref(self, name: str, new: str, old: str | None = None) -> bool:
        """Compare-and-swap: move `name` to `new` only if it is at `old` (None: must not exist)."""
        p = subprocess.run([*GIT, "--git-dir", str(self.path), "update-ref", name, new, old or ZERO],
                           capture_output=True)
        return p.returncode == 0

    def set_ref(self, name: str, new: str) -> None:
        self.git("update-ref", name, new)

    def write_loose_ref(self, name: str, new: str) -> None:
        """Point a write-once bookkeeping ref (refs/experiments/*, refs/candidates/*) at `new`
        without a fork: a loose ref is a file holding the sha, written atomically. Not for
        `best` refs, which need update-ref's compare-and-swap."""
        leaf = name.rsplit("/", 1)[-1]
        if (not name.startswith(("refs/experiments/", "refs/candidates/")) or name.count("/") != 2
                or not _REF_LEAF.match(leaf) or ".." in leaf or leaf.endswith(".lock")):
            raise RepoError(f"not a valid bookkeeping ref name: {name!r}")
        d = os.path.join(self.path, os.path.dirname(name))
        if d not in self._ref_dirs:
            os.makedirs(d, exist_ok=True)
            self._ref_dirs.add(d)
        # atomic_write recreates the directory if git pack-refs --prune removed it
        atomic_write(os.path.join(d, leaf), new + "\n")

    # -- moving commits between nodes ---------------------------------------------------------
    def bundle(self, commit: str) -> bytes:
        """A git bundle holding `commit` and its history (for an agent on another node)."""
        tmpref = f"refs/fetch/{commit}"
        self.set_ref(tmpref, commit)
        try:
            with tempfile.TemporaryDirectory(prefix="bundle") as d:
                f = Path(d) / "b.bundle"
                self.git("bundle", "create", str(f), tmpref)
                return f.read_bytes()
        finally:
            self.git("update-ref", "-d", tmpref, check=False)

    def fetch_bundle(self, data: bytes) -> None:
        """Fetch every commit in a bundle into this repo (refs land under refs/bundles/)."""
        with tempfile.TemporaryDirectory(prefix="bundle") as d:
            f = Path(d) / "in.bundle"
            f.write_bytes(data)
            self.git("bundle", "verify", str(f))
            self.git("fetch", "-q", str(f), "+refs/*:refs/bundles/*")


MERGE_GAP = 3  # unchanged lines the in-process merge wants between the two sides' changes


def _changed_span(base: list[str], other: list[str]) -> tuple[int, int, list[str]] | None:
    """The base lines [i, j) that `other` replaced, and their replacement: everything between
    the longest common prefix and the longest common suffix. None when nothing changed."""
    if base == other:
        return None
    n = min(len(base), len(other))
    p = 0
    while p < n and base[p] == other[p]:
        p += 1
    s = 0
    while s < n - p and base[len(base) - 1 - s] == other[len(other) - 1 - s]:
        s += 1
    return p, len(base) - s, other[p:len(other) - s]


def merge_texts(base: str, ours: str, theirs: str) -> tuple[str, bool]:
    """3-way merge of three texts; returns (merged text, clean).

    The common case, in process: each side changed one region of the base, and the two regions
    are at least MERGE_GAP unchanged lines apart, so the merge is both changes applied (what
    any 3-way merge gives). Anything closer, overlapping or identical on both sides goes to
    `git merge-file` (a fork: ~5-10 ms from a large process, under the decision lock)."""
    b, o, t = base.splitlines(keepends=True), ours.splitlines(keepends=True), theirs.splitlines(keepends=True)
    so, st = _changed_span(b, o), _changed_span(b, t)
    if so is None:
        return theirs, True
    if st is None or o == t:
        return ours, True
    if all(x.endswith("\n") for x in (b[-1:] + o[-1:] + t[-1:])):
        (i1, j1, r1), (i2, j2, r2) = sorted([so, st])
        if _reach(b, (i2, j2, r2))[0] - _reach(b, (i1, j1, r1))[1] >= MERGE_GAP:
            return "".join(b[:i1] + r1 + b[j1:i2] + r2 + b[j2:]), True
        # one side's change well inside a stretch the other left as it was: best has usually
        # moved several times since a candidate's parent (many regions changed), the candidate
        # changed one; each such merge went to git (a quarter of a batch's time at 256 agents).
        # Or the other side made that very change itself (two agents set the same knob, and
        # best has it): the merge is the other side as it is.
        for side, text, span in ((o, ours, st), (t, theirs, so)):
            equal = _equal_stretches(base, text)
            if equal is None:
                continue
            merged = _splice(b, side, equal, span)
            if merged is None and _made_too(b, side, equal, span):
                merged = side
            if merged is not None:
                return "".join(merged), True
    return git_merge_texts(base, ours, theirs)


def _reach(base: list[str], span: tuple[int, int, list[str]]) -> tuple[int, int]:
    """The base lines a change could be placed at: [i, j) widened over the neighbouring lines
    that are among the lines it removes or adds (an insertion into a run of blank lines may sit
    anywhere in the run; git's diff and difflib's may put it in different places)."""
    i, j, repl = span
    moving = set(repl) | set(base[i:j])
    while i > 0 and base[i - 1] in moving:
        i -= 1
    while j < len(base) and base[j] in moving:
        j += 1
    return i, j


def _splice(base: list[str], other: list[str], equal: tuple[tuple[int, int, int], ...],
            span: tuple[int, int, list[str]]) -> list[str] | None:
    """`other` with the base lines [i, j) of `span` replaced by its lines, when `other` left those
    lines and MERGE_GAP lines either side of them as they were in base (inside one of the
    `equal` stretches of the two texts' alignment); None otherwise."""
    i, j, repl = span
    ri, rj = _reach(base, span)
    lo, hi = max(ri - MERGE_GAP, 0), min(rj + MERGE_GAP, len(base))
    for a1, a2, b1 in equal:
        if a1 <= lo and hi <= a2:
            # at either end of the file the context is cut short: there the other side must not
            # have added lines before the first (after the last) either, or both inserted at one
            # place, which git calls a conflict
            if (lo == 0 and b1 != 0) or (hi == len(base) and b1 + a2 - a1 != len(other)):
                return None
            return other[:i + b1 - a1] + repl + other[j + b1 - a1:]
    return None


def _made_too(base: list[str], other: list[str], equal: tuple[tuple[int, int, int], ...],
              span: tuple[int, int, list[str]]) -> bool:
    """`other` made the change of `span` itself: in the alignment, base lines [i, j) are exactly
    what it replaced with those very lines, and it left the lines the change could slide over
    and MERGE_GAP more either side as they were (nothing else of its changes near)."""
    i, j, repl = span
    ri, rj = _reach(base, span)
    lo, hi = max(ri - MERGE_GAP, 0), min(rj + MERGE_GAP, len(base))
    if i == 0:
        k = 0
    else:
        before = next(((a1, b1) for a1, a2, b1 in equal if a2 == i and a1 <= lo), None)
        if before is None:
            return False
        k = before[1] + i - before[0]
    if j == len(base):
        end = len(other)
    else:
        after = next((b1 for a1, a2, b1 in equal if a1 == j and hi <= a2), None)
        if after is None:
            return False
        end = after
    return (ri, rj) == (i, j) and other[k:end] == repl


# The alignment's work bound: difflib's longest-match search visits, for each line of one text,
# every place the other text has that line, so its cost grows with the sum over distinct lines
# of (count in one x count in the other): a 600-line train.py about 2e4; 2,000 identical lines
# (a padded file an LLM may return) 4e6 and half a second under the decision lock. Over this,
# the merge goes to git merge-file (C, linear enough).
ALIGN_WORK_MAX = 200_000


@functools.lru_cache(maxsize=256)
def _equal_stretches(base: str, other: str) -> tuple[tuple[int, int, int], ...] | None:
    """(base start, base end, other start) of each stretch of lines `other` kept from `base`;
    None when aligning them would cost more than ALIGN_WORK_MAX. Cached: every candidate whose
    parent is the same old best is merged with the same best, and the alignment (difflib, ~1 ms
    for a 160-line file) is most of a merge's cost."""
    a, b = base.splitlines(keepends=True), other.splitlines(keepends=True)
    ca, cb = Counter(a), Counter(b)
    if sum(n * cb[x] for x, n in ca.items()) > ALIGN_WORK_MAX:
        return None
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return tuple((a1, a2, b1) for tag, a1, a2, b1, _b2 in sm.get_opcodes() if tag == "equal")


def git_merge_texts(base: str, ours: str, theirs: str) -> tuple[str, bool]:
    """`git merge-file` of three texts (one fork); returns (merged text, clean)."""
    with tempfile.TemporaryDirectory(prefix="merge") as d:
        paths = []
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            f = Path(d) / name
            f.write_text(text, encoding="utf-8")
            paths.append(str(f))
        p = subprocess.run([*GIT, "merge-file", "-p", "-L", "best", "-L", "base", "-L", "candidate", *paths],
                           capture_output=True)
        if p.returncode < 0 or p.returncode > 127:
            raise RepoError(f"git merge-file failed: {p.stderr.decode().strip()[:200]}")
        return p.stdout.decode("utf-8", "replace"), p.returncode == 0

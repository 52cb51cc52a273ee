"""What the coordinator knows of commits: which exist, their train.py blob id and text, read
from git once (a batch's new commits in one cat-file round trip) and kept in memory.

Commits are immutable, so the cache is exact; texts are kept by blob id (parents repeat a lot).
"""
from __future__ import annotations

from collections import Counter, OrderedDict

from agents.edits import counter_delta
from coordinator.state.repo import RepoError, ResearchRepo

TEXT_CACHE = 256  # train.py texts kept in memory, least recently used dropped first


class CommitCache:
    def __init__(self, repo: ResearchRepo):
        self.repo = repo
        self._known: set[str] = set()
        self._blobs: dict[str, str | None] = {}
        self._texts: OrderedDict[str, tuple[str, Counter]] = OrderedDict()

    def look(self, commits: list[str | None]) -> None:
        """Read the commits not seen yet in one cat-file round trip (one blocking read per
        report cost a wait for the interpreter lock each, under load). Unknown ids stay unknown."""
        want = list(dict.fromkeys(c for c in commits if c and c not in self._known))
        if not want:
            return
        for c, (is_commit, blob, data) in zip(want, self.repo.commit_files(want)):
            if is_commit:
                self.remember(c, blob, data.decode("utf-8", "replace") if blob is not None else None)

    def remember(self, commit: str, blob: str | None, text: str | None) -> None:
        """A commit known to be in the repo, its train.py blob id (None: it has none) and text."""
        self._known.add(commit)
        self._blobs[commit] = blob
        if blob is not None:
            self._keep(blob, text)

    def has(self, commit: str | None) -> bool:
        self.look([commit])
        return commit in self._known

    def seen(self, commit: str) -> bool:
        """Known to exist, without asking git (after look())."""
        return commit in self._known

    def blob(self, commit: str) -> str:
        """The commit's train.py blob id. Raises RepoError for an unknown commit or one without it."""
        self.look([commit])
        b = self._blobs.get(commit)
        if b is None:
            raise RepoError(f"{commit[:10]} has no train.py" if commit in self._known
                            else f"unknown commit {commit[:10]}")
        return b

    def text(self, commit: str) -> str:
        return self._entry(commit)[0]

    def diff_lines(self, a: str, b: str) -> tuple[int, int]:
        """(lines added, lines removed) from a to b (see agents.edits.line_delta), from cached texts."""
        return counter_delta(self._entry(a)[1], self._entry(b)[1])

    def _entry(self, commit: str) -> tuple[str, Counter]:
        """(train.py, its lines as a multiset), from the cache when it can."""
        blob = self.blob(commit)
        t = self._texts.get(blob)
        if t is None:
            return self._keep(blob, self.repo.show(commit))
        self._texts.move_to_end(blob)
        return t

    def _keep(self, blob: str, text: str) -> tuple[str, Counter]:
        t = self._texts.get(blob)
        if t is None:
            t = self._texts[blob] = (text, Counter(text.splitlines()))
            if len(self._texts) > TEXT_CACHE:
                self._texts.popitem(last=False)
        else:
            self._texts.move_to_end(blob)
        return t

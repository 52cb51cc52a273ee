"""The coordinator's samples: val_bpb samples per (hardware class, train.py content) and the
pooled noise of each class, fed one decided record at a time.

Sigma is pooled only from samples that no decision selected: baseline and confirmation runs.
An experiment's own run (or a merge's verification run) is the sample that made the coordinator
ask for more, chosen for looking good; counted with its confirmations it inflated sigma by about
a half in the research bench (0.0133-0.015 for a true 0.010), and the margin with it. Likewise a
new best starts a new group: the runs that made it best are not compared with its re-measures.
"""
from __future__ import annotations

from agents.messages import ExperimentRecord
from coordinator.decide.commits import CommitCache
from coordinator.decide.rules import NoisePool, Samples


# Runs whose value no decision has looked at yet when the next one is asked for.
UNSELECTED = ("baseline", "confirm")


class SampleBook:
    """Samples are keyed by the commit's train.py blob, not the commit: the same file trained
    under another commit (a merge that changed nothing, a re-run) is the same candidate."""

    def __init__(self, commits: CommitCache, sigma_prior: float):
        self.commits = commits
        self.sigma_prior = sigma_prior
        self.samples: dict[tuple[str, str], Samples] = {}
        self.noise: dict[str, NoisePool] = {}
        # Samples of a best taken after it became best: the ones that made it best were
        # selected for being low, so once it has fresh ones they alone are its reference.
        self.fresh: dict[tuple[str, str], Samples] = {}
        # Per (class, blob): the unselected samples of the current group (feeds the noise pool).
        self.groups: dict[tuple[str, str], Samples] = {}

    def of(self, hw: str, commit: str | None) -> Samples:
        """The samples of `commit`'s train.py in class `hw` (empty when none, or no commit)."""
        if commit is None:
            return Samples()
        return self.samples.get((hw, self.commits.blob(commit)), Samples())

    def ref(self, hw: str, commit: str | None) -> Samples:
        """What a commit is compared by: its fresh samples once it has any (a best), else all."""
        if commit is None:
            return Samples()
        key = (hw, self.commits.blob(commit))
        f = self.fresh.get(key)
        return f if f is not None and f.n else self.samples.get(key, Samples())

    def fresh_n(self, hw: str, commit: str) -> int | None:
        """Samples of `commit` since it became best; None when it never did (the root)."""
        f = self.fresh.get((hw, self.commits.blob(commit)))
        return None if f is None else f.n

    def start_fresh(self, hw: str, commit: str) -> None:
        """`commit` just became best: count its samples from now on apart."""
        key = (hw, self.commits.blob(commit))
        self.fresh[key] = Samples()
        self.groups[key] = Samples()

    def sigma(self, hw: str) -> float:
        """The pooled val_bpb std of one commit in class `hw` (the prior until there is data)."""
        return self.noise.get(hw, NoisePool()).sigma(self.sigma_prior)

    def dof(self, hw: str) -> int:
        return self.noise.get(hw, NoisePool()).dof

    def add(self, rec: ExperimentRecord) -> None:
        """Count an ok record's val_bpb (and confirm_bpb); a record of an unknown commit counts nothing."""
        if rec.val_bpb is None or not self.commits.has(rec.commit):
            return
        key = (rec.hardware_class, self.commits.blob(rec.commit))
        self.samples.setdefault(key, Samples()).add(rec.val_bpb, rec.confirm_bpb)
        if rec.kind in UNSELECTED:
            self.noise.setdefault(rec.hardware_class, NoisePool()).add(
                self.groups.setdefault(key, Samples()), rec.val_bpb)
        if key in self.fresh:
            self.fresh[key].add(rec.val_bpb, rec.confirm_bpb)

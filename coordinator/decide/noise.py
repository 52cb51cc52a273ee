"""The coordinator's samples: val_bpb samples per (hardware class, train.py content) and the
pooled noise of each class, fed one decided record at a time.

Which samples count where:
- A candidate is judged by all its samples: its experiment run is the sequential test's first look.
- Best (and a merge or a candidate put onto best alone, when verified) by its samples less the
  experiment runs of that code: those were selected for looking good out of many, so they are
  biased low (a best judged by them traps real gains under it; a candidate verified alone would
  be judged by the very sample that made it a winner). Confirmation, verification and repeat
  runs all count: best needs no fresh re-measure after a move, only enough samples.
- Sigma is pooled only from baseline and confirmation runs (within one train.py): an experiment
  run or a verification run is a first look, the sample that made the coordinator ask for more;
  counted with its confirmations it inflated sigma by about a half in the research bench
  (0.0133-0.015 for a true 0.010). A new best starts a new group of its repeats.
- A contended run (the machine much slower than its class's norm: ExperimentResult.contended)
  counts nowhere: it is only remembered, so that its code is measured again.
- Noise measured by earlier swarms (history.py) is a prior of bounded weight on each class's
  sigma, dropped when the swarm's own runs disagree with it (an F test at 1%).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from agents.messages import ExperimentRecord
from coordinator.decide.commits import CommitCache
from coordinator.decide.rules import NoisePool, Samples
from coordinator.decide.stats import betainc

log = logging.getLogger(__name__)

# Runs chosen for looking good: left out of best's mean and of a verification's.
SELECTING = ("experiment",)
# Runs whose value no decision has looked at yet when the next one is asked for: sigma's.
UNSELECTED = ("baseline", "confirm")
# The swarm's own noise must have this many degrees of freedom before it can overrule history.
CHECK_DOF = 6
CHECK_LEVEL = 0.01  # two-sided F test of the swarm's own variance against the history's
# concurrent: auto counts concurrent runs as clustered once earlier swarms of the class measured
# them sharing more than this share of their noise, on at least this many within-cluster dof.
AUTO_RHO = 0.5
AUTO_RHO_DOF = 4


@dataclass
class CodeSamples:
    """The samples of one train.py in one class."""

    all: Samples = field(default_factory=Samples)         # uncontended, every kind
    unselected: Samples = field(default_factory=Samples)  # uncontended, not SELECTING
    contended: int = 0


@dataclass
class Prior:
    m2: float = 0.0
    dof: int = 0
    dropped: bool = False     # the swarm's own runs disagreed with it
    measured: int = 0         # the degrees of freedom those swarms measured (dof: their capped weight)
    swarms: int = 0           # how many earlier swarms it comes from
    rho: float | None = None  # the share of the noise concurrent runs had in common there
    rho_dof: int = 0          # the concurrent runs' within-cluster degrees of freedom it rests on

    def status(self) -> dict:
        """status()["classes"][hw]["noise_prior"]: what the end-of-run summary and the views read."""
        return {"sigma": math.sqrt(self.m2 / self.dof) if self.dof else None, "dof": self.dof,
                "measured_dof": self.measured, "swarms": self.swarms, "dropped": self.dropped}


def f_cdf(f: float, d1: float, d2: float) -> float:
    """P(F <= f) for Fisher's F with (d1, d2) degrees of freedom."""
    if f <= 0:
        return 0.0
    return betainc(d1 / 2.0, d2 / 2.0, d1 * f / (d1 * f + d2))


class SampleBook:
    """Samples are keyed by the commit's train.py blob, not the commit: the same file trained
    under another commit (a merge that changed nothing, a re-run) is the same candidate."""

    def __init__(self, commits: CommitCache, sigma_prior: float, concurrent: str = "independent"):
        self.commits = commits
        self.sigma_prior = sigma_prior
        self.concurrent = concurrent  # PromotionConfig.concurrent: independent | shared | auto
        self.samples: dict[tuple[str, str], CodeSamples] = {}
        self.noise: dict[str, NoisePool] = {}
        self.priors: dict[str, Prior] = {}
        # Per (class, blob): the unselected samples of the current group (feeds the noise pool).
        self.groups: dict[tuple[str, str], Samples] = {}

    def _code(self, hw: str, commit: str | None) -> CodeSamples:
        if commit is None:
            return CodeSamples()
        return self.samples.get((hw, self.commits.blob(commit)), CodeSamples())

    def of(self, hw: str, commit: str | None) -> Samples:
        """Every uncontended sample of `commit`'s train.py in class `hw` (a candidate's)."""
        return self._code(hw, commit).all

    def unselected(self, hw: str, commit: str | None) -> Samples:
        """The samples of `commit`'s train.py less its experiment runs (a verification's)."""
        return self._code(hw, commit).unselected

    def ref(self, hw: str, commit: str | None) -> Samples:
        """What best is compared by: its unselected samples once it has any, else all."""
        c = self._code(hw, commit)
        return c.unselected if c.unselected.n else c.all

    def contended(self, hw: str, commit: str | None) -> int:
        """Runs of `commit`'s train.py that were contended (counted nowhere)."""
        return self._code(hw, commit).contended

    def start_fresh(self, hw: str, commit: str) -> None:
        """`commit` just became best: its repeats start a new noise group."""
        self.groups[(hw, self.commits.blob(commit))] = Samples()

    # -- noise ------------------------------------------------------------------------------
    def set_prior(self, hw: str, m2: float, dof: int, measured: int = 0, swarms: int = 0,
                  rho: float | None = None, rho_dof: int = 0) -> None:
        """Noise from earlier swarms (history.py), already capped in weight."""
        self.priors[hw] = Prior(m2=max(m2, 0.0), dof=max(int(dof), 0),
                                measured=measured or max(int(dof), 0), swarms=swarms, rho=rho, rho_dof=rho_dof)

    def shared(self, hw: str) -> bool:
        """Whether concurrent runs of one train.py count as clustered in class `hw`: always with
        `shared`; with `auto`, once earlier swarms of the class measured them sharing more than
        AUTO_RHO of their noise (on AUTO_RHO_DOF within-cluster degrees of freedom or more)."""
        if self.concurrent == "shared":
            return True
        if self.concurrent != "auto":
            return False
        p = self.priors.get(hw)
        return p is not None and p.rho is not None and p.rho_dof >= AUTO_RHO_DOF and p.rho > AUTO_RHO

    def prior(self, hw: str) -> Prior | None:
        p = self.priors.get(hw)
        return p if p is not None and p.dof > 0 else None

    def own(self, hw: str) -> tuple[float, int]:
        """(sum of squared deviations, degrees of freedom) of this swarm's own noise samples
        (concurrent runs counted as what they are worth when they are clustered)."""
        pool = self.noise.get(hw)
        if pool is None:
            return 0.0, 0
        if self.shared(hw):
            m2, dof, _ = pool.clustered()
            return m2, dof
        return pool.m2, pool.dof

    def measured(self, hw: str) -> tuple[float, int, float | None, int]:
        """What this swarm leaves in the noise history, whatever it counts by: (m2, dof) with
        concurrent runs counted as what they are worth, rho and its within-cluster dof."""
        pool = self.noise.get(hw)
        if pool is None:
            return 0.0, 0, None, 0
        m2, dof, rho = pool.clustered()
        return m2, dof, (rho if pool.w_dof > 0 and dof > 0 else None), pool.w_dof

    def rho(self, hw: str) -> float:
        """The share of a run's noise that concurrent runs on one node have in common (0 unless
        concurrent runs are clustered; 1 while it cannot be told from the runs)."""
        pool = self.noise.get(hw)
        if not self.shared(hw) or pool is None:
            return 0.0
        return pool.clustered()[2]

    def _prior_used(self, hw: str) -> Prior | None:
        p = self.prior(hw)
        if p is None or p.dropped:
            return None
        m2, dof = self.own(hw)
        if dof >= CHECK_DOF and m2 > 0 and p.m2 > 0:
            q = f_cdf((m2 / dof) / (p.m2 / p.dof), dof, p.dof)
            if q < CHECK_LEVEL / 2 or q > 1 - CHECK_LEVEL / 2:
                p.dropped = True
                log.warning("class %s: the noise history (sigma %.4f, %d dof) disagrees with this "
                            "swarm's own runs (sigma %.4f, %d dof); it is dropped", hw,
                            math.sqrt(p.m2 / p.dof), p.dof, math.sqrt(m2 / dof), dof)
                return None
        return p

    def sigma(self, hw: str) -> float:
        """The pooled val_bpb std of one commit in class `hw` (history as a prior; the config's
        prior until there is data)."""
        m2, dof = self.own(hw)
        p = self._prior_used(hw)
        if p is not None:
            m2, dof = m2 + p.m2, dof + p.dof
        if dof <= 0:
            return self.sigma_prior
        return math.sqrt(max(m2, 0.0) / dof)

    def dof(self, hw: str) -> int:
        p = self._prior_used(hw)
        return self.own(hw)[1] + (p.dof if p is not None else 0)

    def add(self, rec: ExperimentRecord) -> None:
        """Count an ok record's val_bpb (and confirm_bpb); a record of an unknown commit counts nothing."""
        if rec.val_bpb is None or not self.commits.has(rec.commit):
            return
        key = (rec.hardware_class, self.commits.blob(rec.commit))
        code = self.samples.setdefault(key, CodeSamples())
        if is_contended(rec):
            code.contended += 1
            return
        at = run_window(rec)   # clusters are kept whatever counts: the history learns rho
        code.all.add(rec.val_bpb, rec.confirm_bpb, at)
        if rec.kind not in SELECTING:
            code.unselected.add(rec.val_bpb, rec.confirm_bpb, at)
        if rec.kind in UNSELECTED:
            self.noise.setdefault(rec.hardware_class, NoisePool()).add(
                self.groups.setdefault(key, Samples()), rec.val_bpb, at=at)


def run_window(rec: ExperimentRecord) -> tuple[str, float, float]:
    """(node, start, end) of a record's run, for clustering concurrent runs: the node the
    trusted runner reported (one machine when it did not say), the record's own times."""
    node = (rec.result.node if rec.result is not None else None) or ""
    return node, rec.started_at, rec.finished_at


def is_contended(rec: ExperimentRecord) -> bool:
    """The runner flagged the run as trained on a machine much slower than its class's norm."""
    return bool(rec.result is not None and rec.result.contended)

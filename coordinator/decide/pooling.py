"""Pools: results inside the margin, put together and verified as one (a part of Coordinator).

One result that beats best by less than the margin cannot be told from noise; several that
change different parts of train.py may add up to a gain one run can tell. When a result's
effect (over best, or over its own parent when that is not best) is at least `pool_fraction`
of the margin, the coordinator looks at the other results judged against the current or the
previous best whose effect was too (pending a confirmation, or discarded inside the margin),
strongest first, and merges each one's change since its merge base with best onto best
together with the result's own (skipping any that conflicts or adds nothing), up to
`pool_max` results. When at least one other joined and that train.py was never tried as
a pool, the combination is committed (best first, then the members) and verified like a merge:
one run on a fresh seed, judged against best by the margin (its sample is new, not one of the
selected ones, so the false-promotion rate is the margin's).
- Verified: best moves once (decision `merge` on the result that formed the pool); the members,
  now ancestors of best, become `carried`, as does any result still pending whose commit a
  new best contains.
- Not verified: the result that formed the pool is judged alone again (a confirmation when it
  earned one); the members keep their own decisions, and no two results of that pool are pooled
  together again (one losing partner joined 8 pools with the same result: 15 runs).
A pool is identified by its best and the set of its results' train.py files (not the merged
text: the same changes pooled in another order, or with a neutral extra, are the same pool).
At most `pool_open_max` pools of one best are verified at a time (each costs a run).
"""
from __future__ import annotations

from agents.messages import Decision, ExperimentRecord
from coordinator.decide.rules import Verdict
from coordinator.state.repo import merge_texts, object_id

# Results judged against the current best or the one before it may join a pool: the swarm's
# runs that started before best last moved are judged against the new best, but their own
# effect (over their parent) is what a pool adds up.
POOL_WINDOW = 2
# A pool is formed from at most POOL_LOOK * pool_max of the strongest candidates.
POOL_LOOK = 4


class Pooling:
    """Mixed into Coordinator: uses its cfg, repo, commits, book, jobs, records, decisions,
    refwriter and _dec. Keeps, per (class, best a decision was judged against), the experiments
    that may join a pool, the pools being verified and the pending ones (updated with every
    decision, so that forming a pool and carrying members never scan the ledger), and the
    train.py blobs already verified as pools."""

    def _init_pools(self) -> None:
        self._cands: dict[tuple[str, str], set[str]] = {}
        self._open_pools: dict[tuple[str, str], set[str]] = {}
        self._pending: dict[tuple[str, str], set[str]] = {}
        self._where: dict[str, tuple[str, str]] = {}     # experiment -> its key in the three above
        self._tried_pools: set[tuple[str, frozenset]] = set()   # (best, results' train.py blobs)
        self._failed_pairs: set[frozenset] = set()              # two results' blobs: failed together
        self._waits_best: dict[tuple[str, str], set[str]] = {}  # results waiting for a sample of best
        self._bases: dict[tuple[str, str], str | None] = {}  # (commit, best) -> their merge base
        self._recent_bests: dict[str, list[str]] = {}  # per class, the last POOL_WINDOW bests, oldest first

    def _index_decision(self, d: Decision, moves: bool = True) -> None:
        """Called with every decision put, after it is in self.decisions (at start-up with
        each experiment's latest decision, moves=False: _note_move sees them in ledger order)."""
        i = d.experiment_id
        old = self._where.pop(i, None)
        if old is not None:
            for index in (self._cands, self._open_pools, self._pending, self._waits_best):
                index.get(old, set()).discard(i)
        if not (d.best_before and d.hardware_class):
            return
        key = (d.hardware_class, d.best_before)
        self._where[i] = key
        if self._poolable(i):
            self._cands.setdefault(key, set()).add(i)
        if d.decision == "pending":
            self._pending.setdefault(key, set()).add(i)
            if d.stage == "verify-pool":
                self._open_pools.setdefault(key, set()).add(i)
            if d.waits == "best":
                self._waits_best.setdefault(key, set()).add(i)
        if moves:
            self._note_move(d)

    def _note_move(self, d: Decision) -> None:
        """A decision in ledger order: when it moved best, remember the last POOL_WINDOW bests."""
        if d.best_after and d.best_before and d.hardware_class:
            seq = self._recent_bests.setdefault(d.hardware_class, [])
            seq[:] = ([b for b in seq if b not in (d.best_before, d.best_after)]
                      + [d.best_before, d.best_after])[-POOL_WINDOW:]

    def _waiting_for_best(self, hw: str, best: str) -> set[str]:
        """Results pending against `best` whose sequential test waits for a sample of it."""
        return self._waits_best.get((hw, best), set())

    def _pool_key(self, best: str, ids: list[str]) -> tuple[str, frozenset]:
        return best, frozenset(self.commits.blob(self.records[i].commit) for i in ids)

    def _pool_failed(self, d: Decision) -> None:
        """A verified pool did not beat best: no two of its results are pooled together again."""
        blobs = sorted(self._pool_key("", [d.experiment_id, *d.pooled])[1])
        self._failed_pairs.update(frozenset((a, b)) for k, a in enumerate(blobs) for b in blobs[k + 1:])

    def _pools_from_ledger(self, pools: list[Decision]) -> None:
        """At start-up, the pool decisions in ledger order: each was tried; one whose merge never
        became best and is not still being verified failed."""
        moved_to = {d.best_after for d in self.decisions.values() if d.best_after}
        for d in pools:
            ids = [d.experiment_id, *d.pooled]
            if not all(i in self.records and self.commits.has(self.records[i].commit) for i in ids):
                continue
            self._tried_pools.add(self._pool_key(d.best_before or "", ids))
            now = self.decisions.get(d.experiment_id)
            open_ = now is not None and now.decision == "pending" and now.merge_commit == d.merge_commit
            if d.merge_commit not in moved_to and not open_:
                self._pool_failed(d)

    # -- forming a pool ---------------------------------------------------------------------
    def _pool_or_confirm(self, rec: ExperimentRecord, best: str, text: str | None, v: Verdict,
                         info: dict) -> Decision:
        """A result that earned a confirmation: pooled when it can be, else confirmed alone."""
        return self._pool_or(rec, best, text, v, info) or self._confirm(rec, rec.commit, best, v, info)

    def _pool_or(self, rec: ExperimentRecord, best: str, text: str | None, v: Verdict,
                 info: dict) -> Decision | None:
        """`text`: the result's change put onto best (None when it does not apply). The pool's
        pending decision, or None when no pool is formed."""
        if (text is None or self.cfg.pool_max <= 1 or v.delta <= 0
                or v.delta < self.cfg.pool_fraction * v.margin):
            return None
        hw = rec.hardware_class
        pool = self._pool(rec, hw, best, text)
        if pool is None:
            return None
        ptext, members = pool
        M = self.repo.commit_tree(ptext, [best, rec.commit] + [self.records[i].commit for i in members],
                                  f"Pool {rec.experiment_id} ({rec.description}) with "
                                  + ", ".join(members) + " onto best", base=best)
        self.commits.remember(M, object_id("blob", ptext.encode()), ptext)
        self.refwriter.later(f"refs/candidates/{rec.experiment_id}", M)
        self.jobs.issue("verify", M, best, hw, rec.experiment_id,
                        f"verify pool of {rec.description} with {len(members)} more")
        return self._dec(rec, "pending", f"better by {v.delta:.4f}, inside margin {v.margin:.4f}; pooled with "
                         + ", ".join(f"{i} ({self._effect(i):+.4f})" for i in members)
                         + ": verifying the combination onto best", stage="verify-pool", merge_commit=M,
                         merge_samples=self.book.of(hw, M).n, pooled=members, **info)

    def _poolable(self, i: str) -> bool:
        """Pending a confirmation, or discarded inside the margin, with an effect of at least
        pool_fraction of the margin: over best, or over its own parent when that is not best."""
        d, rec = self.decisions.get(i), self.records.get(i)
        if d is None or rec is None or rec.kind != "experiment" or d.margin is None:
            return False
        effect = d.delta_parent if d.delta_parent is not None else d.delta
        if effect is None or effect <= 0 or effect < self.cfg.pool_fraction * d.margin:
            return False
        return (d.decision == "pending" and d.stage == "confirm") or d.decision == "discard"

    def _effect(self, i: str) -> float:
        d = self.decisions[i]
        return d.delta_parent if d.delta_parent is not None else d.delta

    def _pools_full(self, hw: str, best: str) -> bool:
        """pool_open_max pools of this best are being verified already."""
        return len(self._open_pools.get((hw, best), ())) >= self.cfg.pool_open_max

    def _pool(self, rec: ExperimentRecord, hw: str, best: str, text: str) -> tuple[str, list[str]] | None:
        """The pool's train.py and its other members, or None (pool_open_max pools of this best
        are open, nobody else to pool with, or this combination was tried)."""
        if self._pools_full(hw, best):
            return None
        bests = self._recent_bests.get(hw, [])[-POOL_WINDOW:] or [best]
        if best not in bests:
            bests = [best]
        cands = sorted({i for b in bests for i in self._cands.get((hw, b), ())} - {rec.experiment_id},
                       key=lambda i: (-self._effect(i), i))
        best_text = self.commits.text(best)
        members: list[str] = []
        blobs = [self.commits.blob(rec.commit)]
        # The strongest few: each candidate costs a merge base (a git call, cached per best)
        for i in cands[:POOL_LOOK * self.cfg.pool_max]:
            if len(members) + 1 >= self.cfg.pool_max:
                break
            C = self.records[i].commit
            b = self.commits.blob(C)
            if b in blobs or any(frozenset((b, x)) in self._failed_pairs for x in blobs):
                continue  # the same change again, or a partner it already failed with
            base = self._merge_base(C, best, hw, self.records[i].parent)
            merged, clean = merge_texts(self.commits.text(base) if base else best_text, text,
                                        self.commits.text(C))
            if clean and merged != text:
                text = merged
                members.append(i)
                blobs.append(b)
        if not members:
            return None
        key = self._pool_key(best, [rec.experiment_id, *members])
        if key in self._tried_pools:
            return None
        self._tried_pools.add(key)
        return text, members

    def _merge_base(self, commit: str, best: str, hw: str, parent: str) -> str | None:
        """The merge base of a result's commit (whose one parent is `parent`) with best: that
        parent when it is an earlier best (most results: no git call; merge-base forks were 16% of
        the decision time at 256 agents, and up to 13 in one batch after a best move), else
        git's answer, cached per best."""
        chain = self._best_chain(hw, best)
        if parent in chain and commit not in chain:
            return parent
        key = (commit, best)
        if key not in self._bases:
            if len(self._bases) > 10_000:
                self._bases.clear()
            self._bases[key] = self.repo.merge_base(commit, best)
        return self._bases[key]

    # -- after best moved -------------------------------------------------------------------
    def _carry(self, hw: str, old: str, new: str, by: Decision) -> None:
        """Results judged against the old best that the new best contains (a pool's members, a
        pending line a merge took along): `carried`, their open jobs cancelled."""
        ids = sorted(self._pending.get((hw, old), set()) | set(by.pooled))
        # What the new best brought that the old did not: one git call, not one per result
        # (with many results pending a move cost ~10 ms of forks each, under the decision lock).
        brought = set(self.repo.git("rev-list", new, f"^{old}").split()) if ids else set()
        for i in ids:
            d, rec = self.decisions.get(i), self.records.get(i)
            if (d is None or rec is None or i == by.experiment_id or rec.commit is None
                    or not (d.decision == "pending" or i in by.pooled)
                    or d.decision in ("carried", "merge", "promote", "simplification")):
                continue
            if rec.commit not in brought:
                continue
            for st in self.jobs.open_jobs(hw):
                if st.job.for_experiment == i:
                    self.jobs.cancel(st.job.job_id, f"its candidate reached best in {by.experiment_id}")
            how = "pool" if i in by.pooled else "merge"
            self._dec(rec, "carried", f"its change reached best in {by.experiment_id}'s verified {how} "
                      f"{new[:10]}", best_before=old, best_after=None, merge_commit=new, delta=d.delta,
                      margin=d.margin, sigma=d.sigma, dof=d.dof, mean=d.mean, samples=d.samples,
                      samples_best=d.samples_best, best_mean=d.best_mean, delta_parent=d.delta_parent)

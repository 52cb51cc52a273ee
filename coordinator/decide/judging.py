"""How the coordinator judges an experiment: against the current best of its hardware class,
whatever its parent (a part of Coordinator, kept apart from the port and the state it owns).
Every comparison is one look of the sequential test (sequential.py, rules.judge).

- On best (its train.py, put onto best, is its own: the parent is best, has best's train.py,
  or descends from best): judged by its own samples against best's: promote (or a confirmed
  simplification); pending while the test goes on, with a job for its next sample (of itself, a
  confirmation, or of best, a repeat); else discard. One made on a result itself pending against
  best (the lead, leads.py, or its agent's own pending line) and measured no better than that
  result is discarded: what it showed is that result's change, whose own test goes on.
- Off best, a winner (it beat best, or its own parent, by the margin): its whole change since
  the merge base with best is merged onto best (a two-parent commit, best first) and verified:
  the merge's own test (its samples less any experiment run of the same code) decides merge or
  did-not-stack. When that merge conflicts or does not stack and the candidate alone beats best
  (or it beat best of its time: once a winner, always verified), the candidate's train.py goes
  onto best the same way, verified like a merge, never with the run that made it a winner.
- Inside the margin but at least pool_fraction of it: pooled with the other such results
  (pooling.py), or tested alone.
- A contended run (the machine much slower than its class's norm) counts nowhere: its code is
  measured again before anything is decided on it.
- No promotion before sigma has min_dof degrees of freedom (noise history included): results
  that look better wait (pending, stage "sigma") while the coordinator schedules repeats of
  best; each new best is re-measured until it has best_remeasures samples besides the
  experiment run that made it a winner.
- When best moves, results it contains are carried, and open verifications of merges onto an
  older best are cancelled (an agent running one stops it) and the candidates merged again
  onto the new best.
"""
from __future__ import annotations

import logging

from agents.messages import Decision, ExperimentRecord
from coordinator.decide.noise import is_contended
from coordinator.decide.rules import Samples, Verdict, judge, margin_for, standard_error
from coordinator.state.repo import merge_texts, object_id

log = logging.getLogger(__name__)

MOVES = ("promote", "simplification")
DEFAULT_LEASE_S = 900.0  # before any run says how long runs take
PARENT_CONFIRMS = 2  # confirmations of an off-best result that only its own parent's test asks for
VERIFY_STAGES = ("verify", "verify-alone", "verify-pool")


class Judging:
    """Mixed into Coordinator: uses its cfg, repo, commits, book (samples and noise), jobs,
    records, decisions, refwriter and its _dec/_move_best/_best_commit helpers."""

    # -- state helpers ----------------------------------------------------------------------
    def _dof(self, hw: str) -> int:
        return self.book.dof(hw)

    def _class_margin(self, hw: str) -> float | None:
        """The margin one new sample must clear against best now (no added lines): the
        sequential test's first look."""
        bs = self.book.ref(hw, self._best_commit(hw))
        dof = self._dof(hw)
        if bs.n == 0 or dof < 1:
            return None
        n_b = bs.info(self.book.rho(hw))
        return margin_for(self.cfg, standard_error(self.book.sigma(hw), 1, n_b), 0, dof,
                          n_eff=1.0 / (1.0 + 1.0 / n_b))

    def _note_run_length(self, rec: ExperimentRecord) -> None:
        """A job's lease must outlast a whole run (budget, start-up, evaluation): never shorter
        than 1.5x the longest run seen, plus a minute."""
        r = rec.result
        if r is not None and r.total_seconds:
            self.jobs.lease_s = max(self.jobs.lease_s, 1.5 * r.total_seconds + 60.0)

    def _best_chain(self, hw: str, best: str) -> set[str]:
        """The commits on best's first-parent history (every best this class had), kept up to
        date as best moves (core._move_best)."""
        chain = self._chains.get(hw)
        if chain is None or best not in chain:
            chain = self._chains[hw] = set(self.repo.first_parent_history(best))
        return chain

    def _followups(self) -> list:
        if not hasattr(self, "_todo"):
            self._todo: list[tuple[str, str]] = []
        return self._todo

    # -- the verdict on an experiment --------------------------------------------------------
    def _judge_experiment(self, rec: ExperimentRecord, prev: Decision | None = None) -> Decision:
        hw, C, P = rec.hardware_class, rec.commit, rec.parent
        best = self._best_commit(hw)
        bs, cs = self.book.ref(hw, best), self.book.of(hw, C)
        sigma, dof, rho = self.book.sigma(hw), self._dof(hw), self.book.rho(hw)
        info = dict(sigma=sigma, dof=dof, samples_best=bs.n, best_before=best, samples=cs.n,
                    mean=cs.mean if cs.n else None, best_mean=bs.mean if bs.n else None)
        if bs.n == 0:
            return self._dec(rec, "unjudged", "best has no samples yet", **info)
        bC, bB = self.commits.blob(C), self.commits.blob(best)
        if bC == bB:
            return self._dec(rec, "discard", "same train.py as best: a sample of best", delta=0.0, **info)
        if cs.n == 0:  # its only runs were contended: measure it again before judging it
            return self._remeasure(rec, best, info)
        has_p = self.commits.has(P)
        p_is_best = P == best or (has_p and self.commits.blob(P) == bB)
        if p_is_best:
            text, clean = self.commits.text(C), True
        else:
            base = self._merge_base(C, best, hw, P)
            base_text = self.commits.text(base) if base else ""
            text, clean = merge_texts(base_text, self.commits.text(best), self.commits.text(C))
        direct = clean and text == self.commits.text(C)   # onto best, its change is itself
        added, removed = self.commits.diff_lines(best, C)
        # Its test against this best goes on (a new best starts a new one).
        looks = tuple(prev.looks) if prev is not None and prev.best_before == best else ()
        vb = judge(self.cfg, cs, bs, sigma, added - removed, allow_simplify=direct, dof=dof, looks=looks, rho=rho)
        vp = None
        ps = self.book.of(hw, P) if has_p and not p_is_best else Samples()
        if ps.n:
            a, r = self.commits.diff_lines(P, C)
            vp = judge(self.cfg, cs, ps, sigma, a - r, allow_simplify=False, dof=dof, sample_ref=False, rho=rho)
        sure = dof >= self.cfg.min_dof
        # Once a winner, always one (against the best of its time): a later best does not
        # turn its merge into a discard, only a verification can say did-not-stack.
        beat_best = (sure and vb.decision == "promote") or bool(prev and prev.beat_best)
        won_parent = (vp.decision == "promote") if vp is not None else (p_is_best and vb.decision == "promote")
        beat_parent = (sure and won_parent) or bool(prev and prev.beat_parent)
        info.update(delta=vb.delta, margin=vb.margin, beat_best=beat_best, beat_parent=beat_parent,
                    delta_parent=vp.delta if vp else (vb.delta if p_is_best else None), looks=list(vb.looks))
        if not sure:
            if vb.delta > 0 or (vp is not None and vp.delta > 0):
                return self._dec(rec, "pending", f"looks better ({vb.delta:+.4f} vs best); waiting for "
                                 f"sigma: {dof} of {self.cfg.min_dof} degrees of freedom", stage="sigma", **info)
            return self._dec(rec, "discard", f"not better than best ({vb.delta:+.4f})"
                             + (f" nor its parent ({vp.delta:+.4f})" if vp else ""), **info)
        if direct:
            if (vb.decision == "pending" and vp is not None and vp.delta <= 0 and not beat_best
                    and not beat_parent and self._parent_pending(hw, P, best)):
                # Made on a result still pending against best (the lead, or its agent's own
                # line) and measured no better than it: all it showed better than best is that
                # result's change, whose own test goes on (confirming this one too flooded the
                # swarm with confirmations of copies of the lead). One that beat best by the
                # margin is a winner as any (it cannot be worse than a pending parent that has
                # not: that one's margin, over as many runs or more, is no wider).
                return self._dec(rec, "discard", f"made on {P[:10]}, itself pending against best, and "
                                 f"measured no better than it ({vp.delta:+.4f})", **info)
            if vb.decision in MOVES:
                new = C
                if P != best:  # first parent must be best: a two-parent commit with the same train.py
                    new = self._onto_best(rec, best, text, "onto best")
                return self._move_best(rec, hw, best, new, vb, sigma, vb.decision,
                                       merge_commit=None if new == C else new, **_extra(info))
            if vb.decision == "pending":
                return self._pool_or_confirm(rec, best, text, vb, info)
            return self._pool_or(rec, best, text, vb, info) or self._dec(rec, "discard", vb.reason, **info)
        if beat_best or beat_parent:
            if clean:
                if object_id("blob", text.encode()) == bB:
                    return self._dec(rec, "carried", "its change is already in best", **info)
                return self._verify(rec, hw, best, text, "verify", info,
                                    f"beat {'best' if beat_best else 'its parent'} by the margin; its change "
                                    f"since the merge base merged cleanly onto best: verifying")
            return self._alone_or(rec, hw, best, vb, info, "conflict",
                                  f"beat its parent by {info['delta_parent']:+.4f}, but its change does "
                                  f"not apply onto best {best[:10]} and alone it does not beat best",
                                  winner=beat_best)
        if vb.decision == "pending":
            return self._pool_or_confirm(rec, best, text if clean else None, vb, info)
        if vp is not None and vp.decision == "pending" and cs.n < 1 + PARENT_CONFIRMS:
            # Against its parent (which no job re-measures) more runs of the candidate soon say
            # little: a few at most (research bench: one result took 15 against a 2-run parent).
            return self._pool_or_confirm(rec, best, text if clean else None, vp, info)
        why = vb.reason if vp is None else f"{vb.reason} against best; {vp.reason} against its parent"
        # Off best, its own effect is what it gained over its parent.
        v = vp if vp is not None and vp.delta > vb.delta else vb
        return (self._pool_or(rec, best, text if clean else None, v, info)
                or self._dec(rec, "discard", why, **info))

    def _parent_pending(self, hw: str, parent: str, best: str) -> bool:
        """Whether `parent` is the commit of a result pending against `best` (lead or line)."""
        return any(self.records[i].commit == parent for i in self._pending.get((hw, best), ())
                   if i in self.records)

    def _onto_best(self, rec: ExperimentRecord, best: str, text: str, what: str) -> str:
        M = self.repo.commit_tree(text, [best, rec.commit],
                                  f"Merge {rec.experiment_id} ({rec.description}) {what}", base=best)
        self.commits.remember(M, object_id("blob", text.encode()), text)  # written just now: no read back
        self.refwriter.later(f"refs/candidates/{rec.experiment_id}", M)
        return M

    def _verify(self, rec: ExperimentRecord, hw: str, best: str, text: str, stage: str, info: dict,
                reason: str) -> Decision:
        M = self._onto_best(rec, best, text, "onto best" if stage == "verify" else "alone onto best")
        n = self.book.unselected(hw, M).n
        self.jobs.issue("verify", M, best, hw, rec.experiment_id,
                        f"verify {'merge of' if stage == 'verify' else 'alone:'} {rec.description}")
        return self._dec(rec, "pending", reason, stage=stage, merge_commit=M, merge_samples=n, **info)

    def _alone_or(self, rec: ExperimentRecord, hw: str, best: str, vb: Verdict, info: dict,
                  otherwise: str, reason: str, winner: bool = False, **kw) -> Decision:
        """The candidate alone onto best when it beats best by itself, or when it beat an
        earlier best by the margin (`winner`: once a winner, it ends on best, pending or
        did-not-stack, never lost to a conflict with a newer best); else `otherwise`."""
        if vb.decision == "promote" or winner:
            why = (f"beats best by {vb.delta:.4f} alone" if vb.decision == "promote" else
                   f"beat an earlier best by the margin ({vb.delta:+.4f} against this one)")
            return self._verify(rec, hw, best, self.commits.text(rec.commit), "verify-alone", info,
                                f"{why}; its change does not go onto best as a merge: verifying it "
                                f"alone onto best")
        return self._dec(rec, otherwise, reason, **{**info, **kw})

    def _confirm(self, rec: ExperimentRecord, commit: str, best: str, v: Verdict, info: dict) -> Decision:
        """Pending in the sequential test: a job for its next sample (a confirmation of itself,
        or a repeat of best: _schedule_repeats counts the results that wait for one)."""
        if v.next != "best":
            n = self.book.contended(rec.hardware_class, commit)
            if self._contended_out(n):
                return self._dec(rec, "unjudged", f"never judged: {n} of its runs were contended", **info)
            self.jobs.issue("confirm", commit, best, rec.hardware_class, rec.experiment_id,
                            f"confirm {rec.description}", copies=self._copies(v, rec.hardware_class, commit))
        return self._dec(rec, "pending", v.reason, stage="confirm",
                         waits="best" if v.next == "best" else "candidate", **info)

    def _contended_out(self, n: int) -> bool:
        """A train.py with `n` contended runs is not measured again (`contended_remeasures`);
        figures.contended_out reads the decisions this leaves unjudged."""
        return n >= self.cfg.contended_remeasures

    def _copies(self, v: Verdict, hw: str, commit: str) -> int:
        """Confirmation runs of a candidate at a time: confirm_parallel when it is measured better
        than half its margin (likely a winner: a swarm's other agents would otherwise run
        experiments on a best about to move while its test takes one round per look), else one.
        Research bench, bowls, 12 seeds: the swarm spent 33 experiments and 7 verifications to
        the target where one agent spent 20 and 1; two at a time: speedup 7.00 -> 7.07, runs to
        the target 1.14 -> 1.13 times one agent's, recall 0.53 -> 0.63."""
        if v.delta < 0.5 * v.margin:
            return 1
        # Never more than a quarter of the class's agents on one candidate: a 2-agent swarm
        # whose both agents confirm a 1-sigma change runs no experiment (real landscape, short
        # swarm: best moved in 5 of 12 seeds with two at a time, 7 with one).
        room = min(1 + self.cfg.confirm_runs - self.book.of(hw, commit).n, self.jobs.agents_in(hw) // 4)
        return max(1, min(self.cfg.confirm_parallel, room))

    def _remeasure(self, rec: ExperimentRecord, best: str, info: dict) -> Decision:
        """Every run of its code was contended: it cannot move best (nor be discarded) on them."""
        hw = rec.hardware_class
        n = self.book.contended(hw, rec.commit)
        if self._contended_out(n):
            return self._dec(rec, "unjudged", f"never judged: all {n} runs of it were contended", **info)
        self.jobs.issue("confirm", rec.commit, best, hw, rec.experiment_id,
                        f"re-measure {rec.description} (contended)")
        return self._dec(rec, "pending", f"its run was contended ({n} so far): measuring it again",
                         stage="contended", waits="candidate", **info)

    # -- after a confirmation or verification run -------------------------------------------
    def _rejudge(self, exp_id: str) -> Decision:
        d = self.decisions[exp_id]
        if d.decision != "pending":
            return d
        rec = self.records[exp_id]
        hw = rec.hardware_class
        M = d.merge_commit
        if M is None or d.stage not in VERIFY_STAGES:
            return self._judge_experiment(rec, prev=d)
        best = self._best_commit(hw)
        if best != d.best_before:  # best moved under the verification: merge onto the new best
            return self._judge_experiment(rec, prev=d)
        # The merge's own samples, never the experiment run of the same code (verify-alone).
        ms = self.book.unselected(hw, M)
        if ms.n <= d.merge_samples:
            if not self.jobs.has_open(hw, exp_id, M):  # its verification run was contended
                if self._contended_out(self.book.contended(hw, M)):
                    return self._dec(rec, "unjudged", "never judged: every verification run was contended",
                                     **_keep(d))
                self.jobs.issue("verify", M, best, hw, exp_id, f"verify again (contended): {rec.description}")
            return d  # its verification run has not reported yet
        bs = self.book.ref(hw, best)
        sigma, dof, rho = self.book.sigma(hw), self._dof(hw), self.book.rho(hw)
        added, removed = self.commits.diff_lines(best, M)
        v = judge(self.cfg, ms, bs, sigma, added - removed, dof=dof, looks=tuple(d.merge_looks), rho=rho)
        info = dict(sigma=sigma, dof=dof, samples_best=bs.n, best_before=best, delta_parent=d.delta_parent,
                    best_mean=bs.mean if bs.n else None,
                    mean=d.mean, beat_best=d.beat_best, beat_parent=d.beat_parent, looks=d.looks)
        if v.decision in MOVES:
            return self._move_best(rec, hw, best, M, v, sigma, "merge", merge_commit=M, pooled=d.pooled,
                                   merge_looks=list(v.looks), **{**_extra(info), "reason_prefix": "verified: "})
        if v.decision == "pending":
            if v.next != "best":
                self.jobs.issue("confirm", M, best, hw, exp_id, f"confirm merge of {rec.description}",
                                copies=self._copies(v, hw, M))
            return self._dec(rec, "pending", f"verification {v.reason}", delta=v.delta, margin=v.margin,
                             stage=d.stage, merge_commit=M, merge_samples=d.merge_samples, pooled=d.pooled,
                             waits="best" if v.next == "best" else "candidate", merge_looks=list(v.looks),
                             **info)
        if d.stage == "verify-pool":  # the combination did not beat best: the result alone
            self._pool_failed(d)
            return self._judge_experiment(rec, prev=d)
        if d.stage == "verify":
            cs = self.book.of(hw, rec.commit)
            a, r = self.commits.diff_lines(best, rec.commit)
            vb = judge(self.cfg, cs, bs, sigma, a - r, allow_simplify=False, dof=dof, rho=rho)
            if vb.decision == "promote" and self.commits.blob(rec.commit) != self.commits.blob(M):
                return self._alone_or(rec, hw, best, vb, {**info, "delta": vb.delta, "margin": vb.margin},
                                      "did-not-stack", "")
        return self._dec(rec, "did-not-stack", f"put onto best, the verification did not beat best: "
                         f"{v.reason}", delta=v.delta, margin=v.margin, merge_commit=M,
                         merge_samples=d.merge_samples, merge_looks=list(v.looks), **info)

    def _give_up(self, exp_id: str, job, reason: str) -> None:
        d = self.decisions.get(exp_id)
        if d is None or d.decision != "pending" or job.commit not in (d.merge_commit, self.records[exp_id].commit):
            return
        self._dec(self.records[exp_id], "unjudged", f"never judged: {reason}", best_before=d.best_before,
                  merge_commit=d.merge_commit, sigma=d.sigma, dof=d.dof, delta_parent=d.delta_parent,
                  beat_best=d.beat_best, beat_parent=d.beat_parent)

    # -- jobs that follow best --------------------------------------------------------------
    def _best_moved(self, hw: str, old: str, new: str, by: Decision) -> None:
        """Mark the results the new best contains `carried` (pooling.py), cancel the open jobs
        an older best made pointless and queue their candidates to be merged again onto the
        new best (after the decision in hand: see _run_followups)."""
        self._carry(hw, old, new, by)
        for st in self.jobs.open_jobs(hw):
            j = st.job
            if j.kind == "baseline" and j.commit != new and st.agent is None and not st.for_agent:
                self.jobs.cancel(j.job_id, "best moved: a repeat of an older best")
            elif j.kind in ("verify", "confirm") and j.parent != new and j.for_experiment:
                d = self.decisions.get(j.for_experiment)
                if d is not None and d.merge_commit == j.commit:
                    self.jobs.cancel(j.job_id, "best moved: merged again onto the new best")
                    self._followups().append(("retarget", j.for_experiment))

    def _sample_added(self, hw: str, dof_before: int, rec: ExperimentRecord | None = None) -> None:
        """After a sample: results that waited for sigma, or for a sample of best, look again."""
        if dof_before < self.cfg.min_dof <= self._dof(hw):
            for i, d in self.decisions.items():
                if d.decision == "pending" and d.stage == "sigma" and d.hardware_class == hw:
                    self._followups().append(("rejudge", i))
        if rec is not None and rec.val_bpb is not None and not is_contended(rec):
            best = self._best_commit(hw)
            if rec.commit == best or self.commits.blob(rec.commit) == self.commits.blob(best):
                for i in sorted(self._waiting_for_best(hw, best)):
                    self._followups().append(("rejudge", i))

    def _run_followups(self) -> None:
        todo = self._followups()
        seen = set()
        while todo:
            what, i = todo.pop(0)
            if (what, i) in seen:
                continue
            seen.add((what, i))
            d = self.decisions.get(i)
            if d is not None and d.decision == "pending":
                if what == "rejudge":
                    self._rejudge(i)
                else:
                    self._judge_experiment(self.records[i], prev=d)

    def _schedule_repeats(self, hw: str) -> None:
        """Open repeats of best (baseline jobs anyone may take) while sigma has fewer than
        min_dof degrees of freedom, best fewer than best_remeasures samples besides the
        experiment run that made it a winner (at most half the class's agents' worth), or
        results wait for a sample of best (one each), counting the repeats already open.
        Contended repeats count nowhere: a class whose every run is contended stops asking
        after `contended_remeasures` of them."""
        if hw not in self.classes:
            return
        best = self._best_commit(hw)
        contended = self.book.contended(hw, best)
        if self.book.of(hw, best).n == 0 and not contended:
            return  # the first round's baselines are on their way (a contended one counts nowhere)
        if self._contended_out(contended):
            return
        open_b = sum(1 for st in self.jobs.open_jobs(hw, "baseline") if st.job.commit == best)
        # The root was never selected: its first round is all its re-measure (with noise history
        # a swarm starts experiments after one baseline run per agent).
        # Up front, at most half the class's agents re-measure a new best (with 2 agents, 4
        # re-measures held both for two rounds after every move); a candidate judged against a
        # best with fewer samples than it gets a sample of best first, so the rest come on demand.
        up_front = min(self.cfg.best_remeasures, max(1, self.jobs.agents_in(hw) // 2))
        remeasure = 0 if best == self.root else up_front - self.book.unselected(hw, best).n
        want = max(remeasure, len(self._waiting_for_best(hw, best)))
        need = max(want - open_b, self.cfg.min_dof - (self._dof(hw) + open_b))
        if contended:  # the repeats already open may come back contended too
            need = min(need, self.cfg.contended_remeasures - contended - open_b)
        for _ in range(max(0, need)):
            self.jobs.issue("baseline", best, best, hw, None, "repeat of best (noise and its mean)")

    def _pending_on_old_best(self) -> None:
        """At start-up: verifications of merges onto a best that has moved since."""
        for i, d in list(self.decisions.items()):
            if (d.decision == "pending" and d.stage in VERIFY_STAGES and d.hardware_class
                    and d.best_before != self._best_commit(d.hardware_class)):
                self._followups().append(("retarget", i))
            elif (d.decision == "pending" and d.stage == "sigma" and d.hardware_class
                  and self._dof(d.hardware_class) >= self.cfg.min_dof):
                self._followups().append(("rejudge", i))


def _keep(d: Decision) -> dict:
    """A pending decision's fields that stay when it ends unjudged."""
    return dict(best_before=d.best_before, merge_commit=d.merge_commit, sigma=d.sigma, dof=d.dof,
                delta_parent=d.delta_parent, beat_best=d.beat_best, beat_parent=d.beat_parent)


def _extra(info: dict) -> dict:
    """The decision fields _move_best does not compute itself."""
    return {k: info[k] for k in ("dof", "samples_best", "delta_parent", "mean", "beat_best", "beat_parent",
                                 "looks") if k in info}

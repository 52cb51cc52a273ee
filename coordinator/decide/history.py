"""Noise knowledge that carries over: the run-to-run sigma of val_bpb measured by earlier swarms
on the same hardware class, profile, budget and apparatus is a prior for the next swarm.

Stored beside the prepared data (`<data dir>/noise-history.json`, under a file lock), one entry
per (hardware class, profile, budget, apparatus fingerprint), and in it one line per swarm:
the sum of squared deviations and the degrees of freedom of its own noise samples (the same
unselected runs that make its sigma: baseline repeats and confirmations). A swarm rewrites its
own line as it measures (keyed by its id, so a resumed or restarted swarm never counts twice)
and reads the others' as its prior.

The weight is honest and bounded:
- honest: the prior's degrees of freedom are the ones those swarms measured, nothing invented;
- bounded: at most `history_dof_max` of them (24 by default: the sum of squares scaled down with
  them, so sigma is kept and only its weight shrinks): a swarm's own runs weigh as much as the
  whole history after 24 samples' worth and soon outweigh it, so a machine that drifted is
  followed;
- checked: once the swarm has a few degrees of freedom of its own, a history that disagrees
  with them (a two-sided F test at 1%: noise.py) is dropped for the rest of the swarm.
With a prior of at least min_dof degrees of freedom a swarm needs no repeats of the baseline for
sigma: each agent's first baseline run gives best its mean, and experiments start after it.

The apparatus fingerprint covers the locked trainer package (every .py file and the baseline
train.py) and the prepared data of the profile (its meta.json less how long the preparation
took, tokenizer and the val and confirm tokens): another trainer version or another corpus
matches nothing, the same corpus prepared again in another folder or on another node matches.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

from filelock import FileLock

from agents.messages import NoiseHistorySpec

log = logging.getLogger(__name__)

FILE = "noise-history.json"
VERSION = 1
WRITE_EVERY_S = 2.0   # a swarm's own line is rewritten at most this often (and when flushed)


# What meta.json says of the preparation rather than of the data: left out of the fingerprint
# (how long it took differs every time the same corpus is prepared)
_PREP_ONLY = ("seconds",)


def apparatus_fingerprint(data_dir: Path | None, profile: str) -> str:
    """12 hex digits over the locked trainer code and the prepared data of `profile`: the same
    corpus prepared again, in another folder or on another node, has the same fingerprint."""
    import trainer
    from trainer.prepare import locate

    h = hashlib.sha256()
    root = Path(trainer.__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    prep = locate(profile, data_dir)
    for name in ("meta.json", "tokenizer.pkl", "val.tokens.npy", "confirm.tokens.npy"):
        f = prep.dir / name
        if f.exists():
            data = f.read_bytes()
            if name == "meta.json":
                data = _data_meta(data)
            h.update(name.encode() + b"\0" + data)
    return h.hexdigest()[:12]


def _data_meta(raw: bytes) -> bytes:
    """meta.json without what only describes the preparation, canonical (sorted keys); the raw
    bytes when it is not a JSON object (then they are what there is to compare)."""
    try:
        meta = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(meta, dict):
        return raw
    return json.dumps({k: v for k, v in meta.items() if k not in _PREP_ONLY}, sort_keys=True).encode()


def history_spec(data_root: Path, profile: str, budget: float) -> NoiseHistorySpec:
    """What `swarm run` hands the coordinator (data_root: the prepared data's root folder)."""
    return NoiseHistorySpec(path=str(Path(data_root) / FILE), profile=profile, budget=float(budget),
                            apparatus=apparatus_fingerprint(Path(data_root), profile))


def _key(spec: NoiseHistorySpec, hw: str) -> str:
    return f"{hw}|{spec.profile}|{spec.budget:g}|{spec.apparatus}"


class NoiseHistory:
    """The history file as one swarm uses it: priors for its classes, its own lines written back."""

    def __init__(self, spec: NoiseHistorySpec, swarm_id: str, dof_max: int):
        self.spec, self.swarm_id, self.dof_max = spec, swarm_id, dof_max
        self.path = Path(spec.path)
        self._lock = FileLock(str(self.path) + ".lock", timeout=10)
        self._due: dict[str, tuple] = {}   # class -> own (m2, dof, rho, rho_dof) not written yet
        self._written: dict[str, tuple] = {}
        self._last = 0.0

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if data.get("version") == VERSION else {"version": VERSION, "entries": {}}
        except FileNotFoundError:
            return {"version": VERSION, "entries": {}}
        except (OSError, ValueError) as e:
            log.warning("noise history %s unreadable (%s): ignored", self.path, e)
            return {"version": VERSION, "entries": {}}

    def _others(self, hw: str) -> list[dict]:
        """The lines of this class's entry written by swarms other than this one ([] when the
        file cannot be read: the swarm goes on without history)."""
        try:
            with self._lock:
                entry = self._read().get("entries", {}).get(_key(self.spec, hw), {})
        except OSError as e:
            log.warning("noise history %s: %s", self.path, e)
            return []
        return [v for sid, v in entry.get("swarms", {}).items() if sid != self.swarm_id]

    def prior(self, hw: str) -> tuple[float, int, int, int]:
        """(m2, dof) of the other swarms' noise for this class, capped at dof_max, with the
        measured dof and how many swarms it comes from: (m2, dof, measured_dof, swarms)."""
        if self.dof_max <= 0:
            return 0.0, 0, 0, 0
        lines = [v for v in self._others(hw) if v.get("dof", 0) > 0]
        m2 = sum(float(v["m2"]) for v in lines)
        dof = sum(int(v["dof"]) for v in lines)
        if dof <= 0:
            return 0.0, 0, 0, 0
        used = min(dof, self.dof_max)
        return m2 * used / dof, used, dof, len(lines)

    def rho(self, hw: str) -> tuple[float | None, int]:
        """The share of the noise concurrent runs had in common in the other swarms of this
        class (weighted by their within-cluster dof), and those dof: (None, 0) when none said."""
        lines = [v for v in self._others(hw) if v.get("rho") is not None and v.get("rho_dof", 0) > 0]
        w = sum(int(v["rho_dof"]) for v in lines)
        if w <= 0:
            return None, 0
        return sum(float(v["rho"]) * int(v["rho_dof"]) for v in lines) / w, w

    def _by_class(self) -> dict[str, dict]:
        """class -> its entry, for this profile, budget and apparatus ({} when the file cannot be
        read)."""
        try:
            with self._lock:
                entries = self._read().get("entries", {})
        except OSError:
            return {}
        tail = _key(self.spec, "")
        return {k[: -len(tail)]: e for k, e in entries.items() if k.endswith(tail)}

    def classes(self) -> list[str]:
        """The hardware classes the file holds noise of, for this profile, budget and apparatus
        (measured by a swarm other than this one)."""
        return [hw for hw, e in self._by_class().items() if any(
            sid != self.swarm_id and v.get("dof", 0) > 0 for sid, v in e.get("swarms", {}).items())]

    def own(self) -> dict[str, int]:
        """This swarm's own lines of the file, for this profile, budget and apparatus: class ->
        dof (a resumed swarm's; never a prior to itself, its runs are in its ledger)."""
        dofs = {hw: int(e.get("swarms", {}).get(self.swarm_id, {}).get("dof", 0)) for hw, e in self._by_class().items()}
        return {hw: n for hw, n in dofs.items() if n > 0}

    def note(self, hw: str, m2: float, dof: int, rho: float | None = None, rho_dof: int = 0) -> None:
        """This swarm's own noise of a class now (concurrent runs counted as what they are worth,
        and the share of the noise they had in common): written at most every WRITE_EVERY_S."""
        if dof <= 0 or self._written.get(hw) == (m2, dof, rho, rho_dof):
            return
        self._due[hw] = (m2, dof, rho, rho_dof)
        if time.monotonic() - self._last >= WRITE_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Write the lines noted since the last write (never raises: the swarm goes on)."""
        if not self._due:
            return
        due, self._due = self._due, {}
        self._last = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                data = self._read()
                entries = data.setdefault("entries", {})
                for hw, (m2, dof, rho, rho_dof) in due.items():
                    e = entries.setdefault(_key(self.spec, hw), {"hardware_class": hw, "profile": self.spec.profile,
                                                                 "budget": self.spec.budget,
                                                                 "apparatus": self.spec.apparatus, "swarms": {}})
                    e["swarms"][self.swarm_id] = {"m2": m2, "dof": dof, "sigma": math.sqrt(m2 / dof),
                                                  "rho": rho, "rho_dof": rho_dof, "updated": time.time()}
                tmp = self.path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(data, indent=1))
                os.replace(tmp, self.path)
            self._written.update(due)
        except OSError as e:
            log.warning("noise history %s not written: %s", self.path, e)


def _goes_on(what: str, where: str, dof: str) -> str:
    """A resumed swarm's start line: no other swarm's noise, its own goes on."""
    return (f"noise history: none from other swarms for {what}, {where}; this swarm goes on with the sigma "
            f"it measured itself ({dof})")


def describe(spec: NoiseHistorySpec | None, hardware_class: str | None, swarm_id: str = "",
             dof_max: int = 24, min_dof: int = 8, own_dof: dict[str, int] | None = None) -> str:
    """One line for `swarm run` at start: whether noise history was found for this hardware class
    (None: not known here, e.g. GPUs on other nodes: every class the file holds for this profile,
    budget and apparatus), its sigma, degrees of freedom, from how many swarms, and what it buys.
    `own_dof`: a resumed swarm's degrees of freedom per class as its coordinator counts them from
    the ledger, what it goes on with (its own line in the file counts concurrent runs as what they
    are worth for other swarms: the quick start resumed said 6 where its last screen had said 8)."""
    if spec is None or dof_max <= 0:
        return f"noise history: off (sigma is measured from scratch: {min_dof + 1} baseline runs first)"
    where = f"budget {spec.budget:g} s, apparatus {spec.apparatus}"
    hist = NoiseHistory(spec, swarm_id, dof_max)
    # a resumed swarm (`swarm run` again in its folder) goes on with the noise it measured itself
    if hardware_class is None:
        classes = sorted(hist.classes())
        if not classes:
            own = _own(hist, swarm_id, own_dof)
            if own:
                return _goes_on(f"profile {spec.profile}", where,
                                ", ".join(f"{hw}: {n} degrees of freedom" for hw, n in sorted(own.items())))
            return (f"noise history: none for profile {spec.profile}, {where} (each class measures sigma: "
                    f"{min_dof + 1} baseline runs first, and leaves it for the next swarm)")
        return "; ".join(_found(hw, *hist.prior(hw), where, min_dof, hist.rho(hw)[0]) for hw in classes)
    m2, dof, measured, swarms = hist.prior(hardware_class)
    if dof <= 0:
        own = _own(hist, swarm_id, own_dof)
        if own.get(hardware_class):
            return _goes_on(hardware_class, where, f"{own[hardware_class]} degrees of freedom")
        return (f"noise history: none for {hardware_class}, {where} (this swarm measures sigma: "
                f"{min_dof + 1} baseline runs first, and leaves it for the next)")
    return _found(hardware_class, m2, dof, measured, swarms, where, min_dof, hist.rho(hardware_class)[0])


def _own(hist: "NoiseHistory", swarm_id: str, own_dof: dict[str, int] | None) -> dict[str, int]:
    """A resumed swarm's own degrees of freedom per class: its coordinator's count where it has
    one, else its line in the file."""
    return {**(hist.own() if swarm_id else {}), **{hw: n for hw, n in (own_dof or {}).items() if n > 0}}


LOW_DOF = 4   # below this, min_dof's margin is more than ~1.4x the default's: said at start


def min_dof_note(min_dof: int, alpha: float, default: int = 8) -> str | None:
    """A line for `swarm run` at start when `promotion.min_dof` is set so low that the first
    decisions' margin is much wider than the default's (Student t at few degrees of freedom):
    a user who lowers it for speed gets a swarm that hardly moves best until more baseline runs
    come. None when min_dof is LOW_DOF or more."""
    if min_dof >= LOW_DOF:
        return None
    from statistics import NormalDist

    from coordinator.decide.sequential import z_to_t

    z = NormalDist().inv_cdf(1 - alpha)
    ratio = z_to_t(z, min_dof) / z_to_t(z, default)
    return (f"promotion.min_dof {min_dof}: the first decisions judge with sigma from {min_dof} degree(s) "
            f"of freedom, a margin {ratio:.1f} x what {default} give (Student t at alpha {alpha:g}): best "
            f"moves only on large gains until more baseline runs come")


def _found(hw: str, m2: float, dof: int, measured: int, swarms: int, where: str, min_dof: int,
           rho: float | None = None) -> str:
    more = ("one baseline run per agent first" if dof >= min_dof
            else f"{min_dof - dof} more baseline runs first")
    shared = "" if rho is None else f"; runs at the same time shared {rho:.0%} of it"
    return (f"noise history: sigma {math.sqrt(m2 / dof):.4f} for {hw}, {where}, from {swarms} earlier swarm"
            f"{'s' if swarms != 1 else ''} ({measured} degrees of freedom, weighed as {dof}){shared}: {more}")

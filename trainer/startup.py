"""The allowance of compute before the clock (locked), measured from the baseline's own start-up.

The clock starts at the first real batch served, or when the allowance after the harness said
ready runs out, whichever is first: whatever train.py does before its first real batch (build
the model, compile on synthetic warm-up batches, or train on text it found on disk) is paid for
out of its budget past the allowance. The allowance is MARGIN x the slowest of the last KEEP
start-ups (ready -> first real batch) of the shipped baseline train.py on the same hardware
class, + SLACK_S, at most the profile's startup_limit. The runner records them itself when it
runs the baseline (the swarm's first round, and every re-measurement of it), in
<runs folder>/.startup.json, which no sandbox sees. A baseline run gets the profile's limit
(it is the measurement), and so does every run before the first measurement.

Measured here (CPU profile, 1 thread, a shared 2-core machine): the baseline's start-up was
1.6-2.4 s, so the allowance is ~7 s instead of 30 s; the GPU baseline compiles during its
warm-up batches, which the margin covers the same way. Re-measured after the graph submit
(no torch.export warm-up; 3 runs, 2026-12-03, the machine loaded: contention 0.70-0.78, the run
getting about a quarter of its core): 7.1-8.9 s, i.e. the same ~2 s of work stretched by the
load, so the allowance there is ~20 s. A start-up measured on a loaded machine loosens the
allowance; one measured quiet and spent loaded tightens it (the clock then starts early, out of
that run's budget; a load that lasts into training flags it contended).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)
FILE = ".startup.json"
KEEP = 8          # recent baseline start-ups kept per hardware class
MARGIN = 2.0      # x the slowest of them
SLACK_S = 2.0     # + seconds (a start-up measured on a quiet machine, run on a busy one)


def is_baseline(train_py: Path) -> bool:
    """train.py is byte for byte the shipped baseline."""
    from trainer import baseline_path
    try:
        return Path(train_py).read_bytes() == baseline_path().read_bytes()
    except OSError:
        return False


def _read(store: Path) -> dict:
    try:
        data = json.loads((store / FILE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def allowance(store: Path, key: str, ceiling: float) -> tuple[float, bool]:
    """(seconds of compute allowed before the clock, whether it was measured) for `key`."""
    samples = [s for s in _read(store).get(key, []) if isinstance(s, (int, float)) and s >= 0]
    if not samples:
        return ceiling, False
    return min(ceiling, MARGIN * max(samples) + SLACK_S), True


def record(store: Path, key: str, seconds: float) -> None:
    """Add one measured start-up of the baseline for `key` (keeps the last KEEP)."""
    data = _read(store)
    data[key] = ([s for s in data.get(key, []) if isinstance(s, (int, float))] + [round(seconds, 3)])[-KEEP:]
    try:
        atomic_write(store / FILE, json.dumps(data))
    except OSError as e:
        log.warning("cannot record the baseline's start-up in %s: %s", store, e)

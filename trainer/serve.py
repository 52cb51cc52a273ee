"""The trusted side of the data path (locked): serves train batches to the sandboxed train.py
over a pipe, owns the clock, counts steps and tokens, receives the submitted weights.

The clock starts when the first real batch is served (or when the start-up limit runs out,
whichever is first) and real batches stop at budget + tolerance/2. Before the clock only
synthetic batches (random tokens) are served, at most `max_synthetic`. After a submit nothing
more is served, and the weights that will be scored are the bytes that came with it, so work
done after submit (the export included) cannot change the score. Nothing the child writes is
trusted: a malformed or unknown message is ignored and counted in `bad_events`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from trainer import wire
from trainer.dataloader import TokenDocs, best_fit_rows

log = logging.getLogger(__name__)
MAX_TENSORS = 100_000
MAX_SHAPES = 8          # distinct (rows, cols) a run may ask for; each keeps its own packer


def tolerance(budget: float, step_seconds: float | None = None) -> float:
    """Seconds a run may overrun its budget: the last step must be allowed to finish, so
    max(2% of the budget, 1 s, 1.5 x the median interval between real batches the parent
    observed), the step part capped at 10% of the budget (a train.py slowing its steps gains
    little). Real data is served until budget + tolerance(budget)/2 at most."""
    step = min(1.5 * step_seconds, 0.1 * budget) if step_seconds else 0.0
    return max(0.02 * budget, 1.0, step)


def check_index(index: object, nbytes: int) -> list[dict] | None:
    """The submit's tensor index, if it describes exactly `nbytes` bytes of known dtypes."""
    if not isinstance(index, list) or len(index) > MAX_TENSORS:
        return None
    off, names, out = 0, set(), []
    for t in index:
        if not isinstance(t, dict) or set(t) != {"name", "dtype", "shape", "offset", "nbytes"}:
            return None
        name, dt, shape = t["name"], t["dtype"], t["shape"]
        if (not isinstance(name, str) or not 0 < len(name) <= 300 or name in names or dt not in wire.DTYPES
                or not isinstance(shape, list) or len(shape) > 8
                or not all(type(s) is int and 0 <= s < 2**40 for s in shape)):
            return None
        size = math.prod(shape) * wire.DTYPES[dt]
        if t["offset"] != off or t["nbytes"] != size:
            return None
        names.add(name)
        off += size
        out.append({"name": name, "dtype": dt, "shape": shape, "offset": t["offset"], "nbytes": size})
    return out if off == nbytes else None


class DataServer(threading.Thread):
    """One run's server. Start it after the child is spawned; read its fields after join()."""

    def __init__(self, event_fd: int, data_fd: int, *, train: TokenDocs, vocab: int, seed: int,
                 budget: float, max_steps: int | None, warmup_cap: int, startup_limit: float,
                 max_batch_tokens: int, max_seq_len: int, weights_path: Path, max_weights_bytes: int,
                 t_spawn: float, on_progress: Callable[[float, int, int], None] | None = None):
        super().__init__(daemon=True, name="swarm-data-server")
        self.event_fd, self.data_fd = event_fd, data_fd
        self.train, self.vocab, self.seed = train, vocab, seed
        self.budget, self.max_steps = budget, max_steps
        self.warmup_cap, self.startup_limit = warmup_cap, startup_limit
        self.max_batch_tokens, self.max_cols = max_batch_tokens, 8 * max_seq_len
        self.weights_path, self.max_weights_bytes = weights_path, max_weights_bytes
        self.t_spawn, self.on_progress = t_spawn, on_progress
        self.dtype = np.uint16 if vocab < 2**16 else np.uint32
        self.lock = threading.Lock()
        self.t_ready: float | None = None
        self.t0: float | None = None          # the clock's start
        self.t_submit: float | None = None    # the submitted weights fully received
        self.t_exported: float | None = None
        self.real = self.synthetic = self.refused = self.tokens = 0
        self.bad_events = 0
        self.submit_index: list[dict] | None = None
        self.submit_meta: dict = {}
        self.submit_error: str | None = None  # the child died halfway through sending its weights
        self.real_times: list[float] = []
        self._packers: dict[tuple[int, int], Iterator[np.ndarray]] = {}
        self._next: dict[tuple[int, int], np.ndarray | None] = {}
        self._buf = bytearray()
        self._last_progress = 0.0

    # --- the clock ------------------------------------------------------------------------
    def forced_start(self) -> float:
        return (self.t_ready or self.t_spawn) + self.startup_limit

    def clock_start(self, now: float | None = None) -> float | None:
        """When the clock started (None: not yet). It starts at the first real batch served, or
        at the start-up limit if train.py never asks for one in time."""
        now = time.monotonic() if now is None else now
        if self.t0 is not None:
            return self.t0
        f = self.forced_start()
        return f if now >= f else None

    def median_interval(self) -> float | None:
        with self.lock:
            ts = list(self.real_times)
        gaps = sorted(b - a for a, b in zip(ts, ts[1:]) if b > a)
        return gaps[len(gaps) // 2] if gaps else None

    def _real_allowed(self, now: float) -> bool:
        if self.t_submit is not None or self.submit_error is not None:
            return False
        if self.max_steps:
            return self.real < self.max_steps
        t0 = self.clock_start(now)
        return t0 is None or now < t0 + self.budget + tolerance(self.budget) / 2

    # --- batches --------------------------------------------------------------------------
    def _rows(self, rows: int, cols: int) -> np.ndarray | None:
        key = (rows, cols)
        if key not in self._packers:
            self._packers[key] = best_fit_rows(self.train, cols + 1, seed=self.seed)
        it = self._packers[key]
        chunk = []
        for _ in range(rows):
            r = next(it, None)
            if r is None:
                return None
            chunk.append(r)
        return np.stack(chunk).astype(self.dtype)

    def _send(self, kind: int, tokens: np.ndarray | None = None) -> None:
        rows, cols = (tokens.shape[0], tokens.shape[1] - 1) if tokens is not None else (0, 0)
        item = np.dtype(self.dtype).itemsize
        data = wire.HEADER.pack(wire.MAGIC, kind, rows, cols, item)
        if tokens is not None:
            data += np.ascontiguousarray(tokens).tobytes()
        view = memoryview(data)
        while view:
            view = view[os.write(self.data_fd, view):]

    def _serve(self, msg: dict, now: float) -> None:
        rows, cols, syn = msg.get("rows"), msg.get("cols"), msg.get("synthetic")
        if type(rows) is not int or type(cols) is not int or not isinstance(syn, bool):
            self.bad_events += 1  # not a request the api makes: no answer, or the pipe falls out of step
            return
        if rows < 1 or cols < 1 or cols > self.max_cols or rows * (cols + 1) > self.max_batch_tokens:
            self.refused += 1
            return self._send(wire.REFUSED)
        if syn:
            if self.clock_start(now) is not None or self.synthetic >= self.warmup_cap:
                self.refused += 1
                return self._send(wire.REFUSED)
            rng = np.random.default_rng([self.seed, self.synthetic])
            self.synthetic += 1
            return self._send(wire.SYNTHETIC, rng.integers(0, self.vocab, (rows, cols + 1)).astype(self.dtype))
        if not self._real_allowed(now):
            return self._send(wire.END)
        key = (rows, cols)
        if key not in self._packers and len(self._packers) >= MAX_SHAPES:
            self.refused += 1
            return self._send(wire.REFUSED)
        tok = self._next.pop(key, None)
        if tok is None:
            tok = self._rows(rows, cols)
        if tok is None:
            return self._send(wire.END)
        with self.lock:
            if self.t0 is None:
                self.t0 = min(now, self.forced_start())
            self.real += 1
            self.tokens += rows * cols
            self.real_times.append(now)
        self._send(wire.REAL, tok)
        self._next[key] = self._rows(rows, cols)  # packed while the child trains on this one
        self._progress(now)

    def _progress(self, now: float) -> None:
        if self.on_progress is None or now - self._last_progress < 1.0:
            return
        self._last_progress = now
        p = self.real / self.max_steps if self.max_steps else (now - self.t0) / self.budget
        try:
            self.on_progress(max(0.0, min(1.0, p)), self.real, self.tokens)
        except Exception:
            log.exception("on_event failed")

    # --- the event stream ------------------------------------------------------------------
    def _read(self) -> bool:
        chunk = os.read(self.event_fd, 1 << 20)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def _lines(self) -> Iterator[bytes]:
        skipping = False
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > wire.MAX_LINE:
                    if not skipping:
                        self.bad_events += 1
                    skipping = True
                    self._buf.clear()
                if not self._read():
                    return
                continue
            line = bytes(self._buf[:i])
            del self._buf[:i + 1]
            if skipping or len(line) > wire.MAX_LINE:
                if not skipping:
                    self.bad_events += 1
                skipping = False
                continue
            yield line

    def _receive_weights(self, nbytes: int, keep: bool) -> bool:
        left = nbytes
        with open(self.weights_path if keep else os.devnull, "wb") as f:
            while left:
                if not self._buf and not self._read():
                    return False
                take = min(left, len(self._buf))
                f.write(self._buf[:take])
                del self._buf[:take]
                left -= take
        return True

    def _submit(self, msg: dict) -> None:
        """The first well-formed submit fixes the weights and stops the clock. A submit line
        without a usable byte count is ignored (nothing follows it); one with a count but a bad
        index has its bytes skipped, so the stream stays in step, and is ignored too."""
        nbytes = msg.get("nbytes")
        if type(nbytes) is not int or not 0 <= nbytes <= self.max_weights_bytes:
            self.bad_events += 1
            return
        index = check_index(msg.get("tensors"), nbytes)
        if not self._receive_weights(nbytes, keep=index is not None):
            self.submit_error = "train.py ended while submitting its weights"
            return
        if index is None:
            self.bad_events += 1
            return
        meta = msg.get("meta")
        with self.lock:
            self.t_submit = time.monotonic()
            self.submit_index = index
            self.submit_meta = meta if isinstance(meta, dict) else {}

    def run(self) -> None:
        try:
            for raw in self._lines():
                now = time.monotonic()
                try:
                    msg = json.loads(raw)
                    name = msg["event"] if isinstance(msg, dict) else None
                except (ValueError, KeyError, RecursionError):
                    name = None
                if name == "batch":
                    self._serve(msg, now)
                elif name == "submit" and self.t_submit is None and self.submit_error is None:
                    self._submit(msg)
                elif name == "ready" and self.t_ready is None:
                    self.t_ready = now
                elif name == "exported" and self.t_submit is not None and self.t_exported is None:
                    self.t_exported = now
                else:
                    self.bad_events += 1
        except OSError:
            pass  # the sandbox was killed mid-write
        except Exception:
            log.exception("data server failed")
        finally:
            self._drain()

    def _drain(self) -> None:
        """Read to EOF so a child blocked writing is not kept alive by us."""
        try:
            while os.read(self.event_fd, 1 << 20):
                pass
        except OSError:
            pass

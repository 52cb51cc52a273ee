"""The trusted side of the data path (locked): serves train batches to the sandboxed train.py
over a pipe, owns the clock, counts steps and tokens, receives the submitted weights.

The clock starts when the first real batch is served (or when the start-up limit runs out,
whichever is first) and real batches stop at budget + tolerance/2. Before the clock only
synthetic batches (random tokens) are served, at most `max_synthetic`. A submit carries the whole
model, its graph (trainer/artifact.py) then its tensors, and the clock stops when the last byte
of it has arrived: nothing computed later can reach the score, and a child that dawdles between
the two pays for it in training time. The graph is checked here, before anything reads val.
Nothing the child writes is trusted: a malformed or unknown message is ignored and counted in
`bad_events`.
"""
from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from trainer import wire
from trainer.artifact import MAX_GRAPH_BYTES, ArtifactError, parse_graph
from trainer.dataloader import TokenDocs, best_fit_rows

log = logging.getLogger(__name__)
MAX_SHAPES = 8          # distinct (rows, cols) a run may ask for; each keeps its own packer


def tolerance(budget: float, step_seconds: float | None = None) -> float:
    """Seconds a run may overrun its budget: the last step must be allowed to finish, so
    max(2% of the budget, 1 s, 1.5 x the median interval between real batches the parent
    observed), the step part capped at 10% of the budget (a train.py slowing its steps gains
    little). Real data is served until budget + tolerance(budget)/2 at most."""
    step = min(1.5 * step_seconds, 0.1 * budget) if step_seconds else 0.0
    return max(0.02 * budget, 1.0, step)


class DataServer(threading.Thread):
    """One run's server. Start it after the child is spawned; read its fields after join()."""

    def __init__(self, event_fd: int, data_fd: int, *, train: TokenDocs, vocab: int, seed: int,
                 budget: float, max_steps: int | None, warmup_cap: int, startup_limit: float,
                 max_batch_tokens: int, max_seq_len: int, weights_path: Path, max_weights_bytes: int,
                 t_spawn: float, on_progress: Callable[[float, int, int], None] | None = None,
                 eval_shape: tuple[int, int] | None = None):
        super().__init__(daemon=True, name="swarm-data-server")
        self.event_fd, self.data_fd = event_fd, data_fd
        self.train, self.vocab, self.seed = train, vocab, seed
        self.budget, self.max_steps = budget, max_steps
        self.warmup_cap, self.startup_limit = warmup_cap, startup_limit
        self.max_batch_tokens, self.max_cols = max_batch_tokens, 8 * max_seq_len
        self.weights_path, self.max_weights_bytes = weights_path, max_weights_bytes
        self.t_spawn, self.on_progress = t_spawn, on_progress
        self.eval_shape = eval_shape          # the (batch, seq) input the graph must be traced on
        self.graph_path = Path(weights_path).with_name("graph.json")
        self.dtype = np.uint16 if vocab < 2**16 else np.uint32
        self.lock = threading.Lock()
        self.t_ready: float | None = None
        self.t0: float | None = None          # the clock's start
        self.t_submit: float | None = None    # the submitted model (graph and tensors) fully received
        self.t_exported: float | None = None  # no export any more: always None
        self.real = self.synthetic = self.refused = self.tokens = 0
        self.bad_events = 0
        self.submit_index: list[dict] | None = None
        self.submit_literals = 0
        self.submit_meta: dict = {}
        self.submit_error: str | None = None  # the submit was cut short or refused: why
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

    def _receive(self, nbytes: int, out) -> bool:
        left = nbytes
        while left:
            if not self._buf and not self._read():
                return False
            take = min(left, len(self._buf))
            out.write(self._buf[:take])
            del self._buf[:take]
            left -= take
        return True

    def _submit(self, msg: dict) -> None:
        """The first submit line with usable byte counts is the submit: its graph and tensors are
        read (a line without them is ignored: nothing follows it). A graph that does not check
        out is refused with its reason, which names only what train.py wrote."""
        nbytes, gbytes = msg.get("nbytes"), msg.get("graph")
        if type(nbytes) is not int or type(gbytes) is not int or not 0 <= nbytes <= self.max_weights_bytes \
                or not 0 < gbytes <= MAX_GRAPH_BYTES:
            self.bad_events += 1
            return
        raw = io.BytesIO()
        with open(self.weights_path, "wb") as f:
            if not (self._receive(gbytes, raw) and self._receive(nbytes, f)):
                self.submit_error = "train.py ended while submitting its model"
                return
        now = time.monotonic()
        try:
            graph, literals = parse_graph(raw.getvalue(), nbytes, self.eval_shape)
        except ArtifactError as e:
            self.submit_error = f"submit refused: {e}"
            return
        tmp = self.graph_path.with_suffix(".tmp")
        tmp.write_bytes(raw.getvalue())
        os.replace(tmp, self.graph_path)
        meta = msg.get("meta")
        with self.lock:
            self.t_submit = now
            self.submit_index = graph["tensors"]
            self.submit_literals = literals
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

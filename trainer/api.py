"""What train.py imports (locked): profile constants, the train-batch loader, the clock, submit.

The harness fills this module in before train.py runs, inside the training sandbox. Nothing
here can change the score or the time: batches come from the runner (the trusted parent) over
a pipe, the runner's clock starts when it serves the first real batch and it stops serving at
the budget; the model (its graph and its tensors) is fixed when submit sends it; a separate
locked evaluator scores.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator

from trainer import wire
from trainer.artifact import trace_batch

# Filled in by trainer.harness before train.py runs (read them; writing changes nothing).
PROFILE: str = ""
MAX_SEQ_LEN: int = 0
VOCAB_SIZE: int = 0
EVAL_BATCH: int = 0
TIME_BUDGET: float = 0.0     # seconds of training; the runner's clock enforces it, not this value
MAX_STEPS: int | None = None  # deterministic mode: progress = real batches / MAX_STEPS
WARMUP_STEPS: int = 0        # the loader's first batches: random tokens, served before the clock
DEVICE: str = "cpu"
DEVICE_TYPE: str = "cpu"
SEED: int = 0
RUN_DIR: str = "."           # the sandbox's scratch (the only writable place)


class _State:
    spec: dict | None = None
    fd: int | None = None
    data_fd: int | None = None
    t_start: float | None = None   # when this process received the first real batch
    real = 0                       # real batches received
    synthetic = 0
    steps = 0
    submitted = False


_S = _State()


def _emit(event: dict) -> None:
    _write(json.dumps(event).encode() + b"\n")


def _write(data: bytes | memoryview) -> None:
    if _S.fd is None:
        return
    view = memoryview(data).cast("B")
    try:
        while view:
            n = os.write(_S.fd, view)
            view = view[n:]
    except OSError:
        pass  # the parent went away; it will kill us


def _read_exact(n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = os.readv(_S.data_fd, [view[got:]])
        if k == 0:
            raise EOFError("the runner closed the data pipe")
        got += k
    return buf


def _install(spec: dict, fd: int | None, data_fd: int | None) -> None:
    """Called once by the harness; train.py must not call it."""
    g = globals()
    g.update(PROFILE=spec["profile"], MAX_SEQ_LEN=spec["max_seq_len"], VOCAB_SIZE=spec["vocab_size"],
             EVAL_BATCH=spec["eval_batch"], TIME_BUDGET=float(spec["budget"]), MAX_STEPS=spec.get("max_steps"),
             WARMUP_STEPS=spec["warmup_batches"], DEVICE=spec["device"], DEVICE_TYPE=spec["device"].split(":")[0],
             SEED=spec["seed"], RUN_DIR=spec["scratch"])
    _S.spec = dict(spec)  # a private copy: editing the constants above changes nothing
    _S.fd, _S.data_fd = fd, data_fd


def _spec() -> dict:
    if _S.spec is None:
        raise RuntimeError("train.py runs under the locked runner: `swarm train PATH`")
    return _S.spec


def _progress(now: float | None = None) -> float:
    spec = _spec()
    if spec.get("max_steps"):
        return _S.real / spec["max_steps"]
    if _S.t_start is None:
        return 0.0
    return ((now or time.monotonic()) - _S.t_start) / spec["budget"]


def _fetch(rows: int, cols: int, synthetic: bool):
    """One batch from the runner: (kind, tokens (rows, cols+1) as a numpy array or None)."""
    import numpy as np

    _emit({"event": "batch", "rows": rows, "cols": cols, "synthetic": synthetic})
    magic, kind, r, c, item = wire.HEADER.unpack(_read_exact(wire.HEADER.size))
    if magic != wire.MAGIC:
        raise RuntimeError("the data pipe is out of sync")
    if kind not in (wire.REAL, wire.SYNTHETIC):
        return kind, None
    raw = _read_exact(r * (c + 1) * item)
    return kind, np.frombuffer(raw, dtype=np.uint16 if item == 2 else np.uint32).reshape(r, c + 1)


class Clock:
    """The training clock, as this process sees the runner's: it starts when the first real
    batch arrives. progress() is training time over the budget (or real batches / MAX_STEPS);
    done() says stop. Call step() after every optimizer step (it only counts, for your log)."""

    def step(self) -> None:
        _S.steps += 1

    def progress(self) -> float:
        return max(0.0, min(1.0, _progress()))

    def done(self) -> bool:
        return _progress() >= 1.0

    @property
    def steps(self) -> int:
        return _S.steps

    @property
    def training_seconds(self) -> float:
        return 0.0 if _S.t_start is None else time.monotonic() - _S.t_start


def tokenizer():
    """The locked tiktoken Encoding (with `<|bos|>`)."""
    from trainer.tokenizer import load_tokenizer
    return load_tokenizer(_spec()["tokenizer"])


def train_loader(batch_size: int, seq_len: int | None = None) -> Iterator:
    """(x, y) long tensors (batch_size, seq_len) on DEVICE. The first WARMUP_STEPS batches (over
    all loaders) are random tokens served before the clock, for compilation; then rows of the
    train split, BOS-aligned best-fit packed, reshuffled every epoch with SEED, served by the
    runner, whose clock starts with the first of them. Stops when the runner stops serving
    (the budget is spent)."""
    import torch

    spec = _spec()
    seq_len = seq_len or spec["max_seq_len"]
    cuda = spec["device"].startswith("cuda")
    while True:
        synthetic = _S.synthetic < spec["warmup_batches"] and _S.real == 0
        kind, tok = _fetch(batch_size, seq_len, synthetic)
        if kind == wire.END:
            return
        if kind == wire.REFUSED and synthetic:
            _S.synthetic = spec["warmup_batches"]  # the warm-up allowance is spent: real batches now
            continue
        if kind == wire.REFUSED:
            raise RuntimeError(f"the runner refused a batch of {batch_size} x {seq_len} tokens")
        if kind == wire.REAL:
            _S.real += 1
            if _S.t_start is None:
                _S.t_start = time.monotonic()
        else:
            _S.synthetic += 1
        t = torch.from_numpy(tok.astype("int64"))
        xt, yt = t[:, :-1].contiguous(), t[:, 1:].contiguous()
        if cuda:
            xt = xt.pin_memory().to(spec["device"], non_blocking=True)
            yt = yt.pin_memory().to(spec["device"], non_blocking=True)
        yield xt, yt


def _tensors(model) -> list[tuple[str, object]]:
    """The model's parameters and buffers, each distinct tensor once (tied weights are one)."""
    seen: dict[int, tuple[str, object]] = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + \
            list(model.named_buffers(remove_duplicate=False)):
        seen.setdefault(id(t), (name, t))
    return list(seen.values())


class _TraceError(Exception):
    pass


def _trace(model, example, weights: list) -> tuple[dict, list]:
    """Run model(example) once and record every aten op it calls (trainer/artifact.py's format).
    Returns (graph without its tensor table, constants): constants are the tensors the forward
    used that are neither in `weights` nor computed by a recorded op (torch.tensor(0.5), a plain
    tensor attribute); they follow the weights in the table and count like them."""
    import math
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    table = list(weights)
    index = {id(t): k for k, t in enumerate(table)}
    consts: list = []
    live: dict[int, tuple] = {}     # id(tensor) -> (weakref, node, output index); no strong refs:
    nodes: list = []                # intermediates are freed as in a plain forward

    def ref(t):
        k = index.get(id(t))
        if k is not None and table[k] is t:
            return {"t": k}
        if t is example:
            return {"x": 0}
        hit = live.get(id(t))
        if hit is not None and hit[0]() is t:
            return {"v": [hit[1], hit[2]]}
        index[id(t)] = len(table)
        table.append(t)  # kept alive, so its id is never reused during the trace
        consts.append(t.detach().to("cpu").clone())
        return {"t": len(table) - 1}

    def enc(a):
        if isinstance(a, torch.Tensor):
            return ref(a)
        if a is None or isinstance(a, (bool, int)):
            return a
        if isinstance(a, float):
            if math.isfinite(a):
                return a
            return {"f": "nan" if math.isnan(a) else ("inf" if a > 0 else "-inf")}
        if isinstance(a, (list, tuple)):
            return [enc(b) for b in a]
        if isinstance(a, torch.dtype):
            return {"dtype": str(a).removeprefix("torch.")}
        if isinstance(a, torch.device):
            return {"device": a.type}
        if isinstance(a, torch.layout):
            return {"layout": str(a).removeprefix("torch.")}
        if isinstance(a, torch.memory_format):
            return {"memory_format": str(a).removeprefix("torch.")}
        if isinstance(a, str):
            return {"s": a}
        raise _TraceError(f"an argument of type {type(a).__name__}")

    class Recorder(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            return False  # else its first op imports torch._dynamo: 8-14 s of a busy CPU, in the budget

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            node = [str(func), [enc(a) for a in args], {k: enc(v) for k, v in kwargs.items()}]
            out = func(*args, **kwargs)
            n = len(nodes)
            nodes.append(node)
            for i, t in enumerate(out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    live[id(t)] = (weakref.ref(t), n, i)
            return out

    with torch.no_grad(), Recorder():
        out = model(example)
    if not isinstance(out, torch.Tensor):
        raise _TraceError(f"model(idx) returned {type(out).__name__}, not a logits tensor")
    hit = live.get(id(out))
    if hit is None or hit[0]() is not out:
        raise _TraceError("model(idx) returned a tensor that no op computed")
    graph = {"format": "swarm-graph/1", "input": list(example.shape), "nodes": nodes,
             "output": {"v": [hit[1], hit[2]]}}
    return graph, consts


def submit(model, **metadata) -> None:
    """End of training: records model(idx) -> logits as a graph of aten ops (one forward, on one
    row on CPU and on an eval batch on GPU; it counts as training time, like a last step) and
    sends it with the model's tensors to the runner, which stops the clock when both have
    arrived: what is scored is exactly what was sent here, nothing computed later. Then ends
    this process. Does not return."""
    import torch

    spec = _spec()
    if _S.submitted:
        return
    _S.submitted = True
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    named = _tensors(model)
    weights = [t for _, t in named]
    # the tensors as they are now: the forward recorded below must not change what is sent
    sent = [w.detach().to("cpu", copy=True).contiguous() for w in weights]
    rows = trace_batch(spec["device"], spec["eval_batch"])
    example = torch.zeros((rows, spec["max_seq_len"]), dtype=torch.long, device=spec["device"])
    try:
        model.eval()
        graph, consts = _trace(model, example, weights)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        print(f"api.submit: model(idx) -> logits could not be recorded: {type(e).__name__}: {msg}",
              file=sys.stderr, flush=True)
        os._exit(4)
    names = [n for n, _ in named] + [f"constant.{i}" for i in range(len(consts))]
    index, blobs, off = [], [], 0
    for name, a in zip(names, sent + [c.contiguous() for c in consts]):
        b = a.reshape(-1).view(torch.uint8).numpy() if a.numel() else b""
        index.append({"name": name, "dtype": str(a.dtype).removeprefix("torch."),
                      "shape": list(a.shape), "offset": off, "nbytes": len(b)})
        blobs.append(b)
        off += len(b)
    graph["tensors"] = index
    raw = json.dumps(graph, separators=(",", ":"), allow_nan=False).encode()
    meta = {k: v for k, v in metadata.items() if isinstance(v, (int, float, str, bool))}
    if spec["device"].startswith("cuda"):
        meta["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    head = json.dumps({"event": "submit", "graph": len(raw), "nbytes": off, "meta": meta}).encode()
    if len(head) >= wire.MAX_LINE:
        print("api.submit: the submit line is too long", file=sys.stderr, flush=True)
        os._exit(4)
    _write(head + b"\n")
    _write(raw)
    for b in blobs:
        _write(b)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

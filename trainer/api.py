"""What train.py imports (locked): profile constants, the train-batch loader, the clock, submit.

The harness fills this module in before train.py runs, inside the training sandbox. Nothing
here can change the score or the time: batches come from the runner (the trusted parent) over
a pipe, the runner's clock starts when it serves the first real batch and it stops serving at
the budget; the weights are fixed when submit sends them; a separate locked evaluator scores.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator

from trainer import wire

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
    seen: dict[str, object] = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + \
            list(model.named_buffers(remove_duplicate=False)):
        seen.setdefault(name, t)
    return list(seen.items())


def submit(model, **metadata) -> None:
    """End of training: sends the model's tensors to the runner (this fixes the weights that
    will be scored and stops the clock), then exports model(idx) -> logits with torch.export
    for the locked evaluator, and ends this process. Does not return."""
    import torch

    spec = _spec()
    if _S.submitted:
        return
    _S.submitted = True
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    index, blobs, off = [], [], 0
    for name, t in _tensors(model):
        a = t.detach().to("cpu").contiguous()
        b = a.reshape(-1).view(torch.uint8).numpy() if a.numel() else b""
        index.append({"name": name, "dtype": str(a.dtype).removeprefix("torch."),
                      "shape": list(a.shape), "offset": off, "nbytes": len(b)})
        blobs.append(b)
        off += len(b)
    meta = {k: v for k, v in metadata.items() if isinstance(v, (int, float, str, bool))}
    if spec["device"].startswith("cuda"):
        meta["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    head = json.dumps({"event": "submit", "nbytes": off, "tensors": index, "meta": meta}).encode()
    if len(head) >= wire.MAX_LINE:
        print("api.submit: the model has too many tensors to submit", file=sys.stderr, flush=True)
        os._exit(4)
    _write(head + b"\n")
    for b in blobs:
        _write(b)
    example = torch.zeros((spec["eval_batch"], spec["max_seq_len"]), dtype=torch.long, device=spec["device"])
    out = os.path.join(spec["scratch"], "model.pt2")
    try:
        model.eval()
        with torch.no_grad():
            ep = torch.export.export(model, (example,))
        tmp = out + f".tmp{os.getpid()}.pt2"
        torch.export.save(ep, tmp)
        os.replace(tmp, out)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        print(f"api.submit: the model's forward must be exportable with torch.export "
              f"(model(idx) -> logits): {type(e).__name__}: {msg}", file=sys.stderr, flush=True)
        os._exit(4)
    _emit({"event": "exported"})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

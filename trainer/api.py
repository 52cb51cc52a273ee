"""What train.py imports (locked): profile constants, the train-split loader, the clock, submit.

The harness fills this module in before train.py runs. Nothing here can change the score:
the runner's own clock (in the parent process) and a separate evaluation process decide it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# Filled in by trainer.harness before train.py runs (read them; writing changes nothing).
PROFILE: str = ""
MAX_SEQ_LEN: int = 0
VOCAB_SIZE: int = 0
EVAL_BATCH: int = 0
TIME_BUDGET: float = 0.0     # seconds of training; the runner's clock enforces it, not this value
MAX_STEPS: int | None = None  # deterministic mode: progress = step / MAX_STEPS
WARMUP_STEPS: int = 0        # first steps excluded from the clock (compilation)
DEVICE: str = "cpu"
DEVICE_TYPE: str = "cpu"
SEED: int = 0
RUN_DIR: str = "."


class _State:
    spec: dict | None = None
    fd: int | None = None
    t_ready = 0.0
    t_start: float | None = None
    steps = 0
    tokens = 0
    last_progress = 0.0
    submitted = False


_S = _State()


def _emit(event: dict) -> None:
    if _S.fd is None:
        return
    try:
        os.write(_S.fd, (json.dumps(event) + "\n").encode())
    except OSError:
        pass  # the parent went away; it will kill us


def _install(spec: dict, fd: int | None) -> None:
    """Called once by the harness; train.py must not call it."""
    g = globals()
    g.update(PROFILE=spec["profile"], MAX_SEQ_LEN=spec["max_seq_len"], VOCAB_SIZE=spec["vocab_size"],
             EVAL_BATCH=spec["eval_batch"], TIME_BUDGET=float(spec["budget"]), MAX_STEPS=spec.get("max_steps"),
             WARMUP_STEPS=spec["warmup_steps"], DEVICE=spec["device"], DEVICE_TYPE=spec["device"].split(":")[0],
             SEED=spec["seed"], RUN_DIR=spec["run_dir"])
    _S.spec = dict(spec)  # a private copy: editing the constants above changes nothing
    _S.fd = fd
    _S.t_ready = time.monotonic()


def _spec() -> dict:
    if _S.spec is None:
        raise RuntimeError("train.py runs under the locked runner: `swarm train PATH`")
    return _S.spec


def _progress(now: float | None = None) -> float:
    spec = _spec()
    if spec.get("max_steps"):
        return _S.steps / spec["max_steps"]
    if _S.t_start is None:
        return 0.0
    return ((now or time.monotonic()) - _S.t_start) / spec["budget"]


def _budget_spent() -> bool:
    """The loader runs dry here: a little past the budget, so a loop that prefetches one batch
    after its last step still works, while one that ignores the clock ends near the budget."""
    spec = _spec()
    if spec.get("max_steps"):
        return _S.steps >= spec["max_steps"]
    now = time.monotonic()
    if _S.t_start is None:
        return now - _S.t_ready > spec["startup_limit"] + spec["budget"]
    return _progress(now) >= 1.0 + spec["tolerance"] / 2


class Clock:
    """The training clock. Call step() after every optimizer step; progress() is training time
    over the budget (or step / MAX_STEPS); done() says stop. The first WARMUP_STEPS steps are
    not counted (compilation), but never more than the locked startup limit."""

    def step(self) -> None:
        _S.steps += 1
        now = time.monotonic()
        spec = _spec()
        if _S.t_start is None and (_S.steps >= spec["warmup_steps"]
                                   or now - _S.t_ready >= spec["startup_limit"]):
            _S.t_start = now
            _S.last_progress = now - 1.0
            _emit({"event": "start", "steps": _S.steps, "tokens": _S.tokens})
        else:
            _emit({"event": "step", "steps": _S.steps})  # the parent times steps for its tolerance
        if _S.t_start is not None and now - _S.last_progress >= 1.0:
            _S.last_progress = now
            _emit({"event": "progress", "progress": min(1.0, _progress(now)),
                   "steps": _S.steps, "tokens": _S.tokens})

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
    return load_tokenizer(Path(_spec()["prepared_dir"]) / "tokenizer.pkl")


def train_loader(batch_size: int, seq_len: int | None = None) -> Iterator:
    """(x, y) long tensors (batch_size, seq_len) on DEVICE, from the train split only, BOS-aligned
    best-fit packed, reshuffled every epoch with SEED. Stops once the budget is spent."""
    import torch

    from trainer.dataloader import TokenDocs, batches

    spec = _spec()
    seq_len = seq_len or spec["max_seq_len"]
    docs = TokenDocs(spec["prepared_dir"], "train")
    cuda = spec["device"].startswith("cuda")
    for x, y in batches(docs, batch_size, seq_len, seed=spec["seed"]):
        if _budget_spent():
            return
        _S.tokens += x.size
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        if cuda:
            xt = xt.pin_memory().to(spec["device"], non_blocking=True)
            yt = yt.pin_memory().to(spec["device"], non_blocking=True)
        yield xt, yt


def submit(model, **metadata) -> None:
    """End of training: stops the clock, exports model(idx) -> logits with torch.export for
    the locked evaluation process, and ends this process. Does not return."""
    import torch

    spec = _spec()
    if _S.submitted:
        return
    _S.submitted = True
    meta = {k: v for k, v in metadata.items() if isinstance(v, (int, float, str, bool))}
    if spec["device"].startswith("cuda"):
        meta["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    _emit({"event": "submit", "steps": _S.steps, "tokens": _S.tokens, "meta": meta})
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    example = torch.zeros((spec["eval_batch"], spec["max_seq_len"]), dtype=torch.long, device=spec["device"])
    out = Path(spec["run_dir"]) / "model.pt2"
    try:
        model.eval()
        with torch.no_grad():
            ep = torch.export.export(model, (example,))
        tmp = out.with_name(f"model.tmp{os.getpid()}.pt2")
        torch.export.save(ep, str(tmp))
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

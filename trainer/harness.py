"""Child-process entry (locked): seeds, threads, the api's pipes, then runs train.py.

Runs inside the training sandbox as `python -I -c ... --wait EVENT_FD DATA_FD DEVICE` (waits
for its spec on the data pipe: the runner first puts train.py into the sandbox's private
scratch, which it reaches through this process's root before any of train.py's code ran), or
ahead of its run as `... --standby EVENT_FD DATA_FD DEVICE` (imports torch and warms the
optimizers and the forward recording first); never by hand. There is no read guard here: val, confirm
and the raw data are not in the sandbox at all, and nothing this process does is trusted by the
runner.
"""
from __future__ import annotations

import json
import os
import random
import runpy
import sys

from trainer import api, wire


def preload(device: str) -> None:
    """What every run pays before its clock, paid by a standby before its run exists: torch,
    numpy, the optimizers' lazy imports (~8 s on a busy CPU), a CUDA context, and the first
    recording of a forward (api._trace: 33 ms the first time, 0.4 ms after; submit's recording
    counts as training time)."""
    import torch

    import trainer.dataloader, trainer.tokenizer  # noqa: F401,E401

    if device.startswith("cuda"):
        torch.zeros(1, device=device)
    lin = torch.nn.Linear(2, 2)
    torch.optim.AdamW(lin.parameters())
    with torch.no_grad():
        api._trace(lin.eval(), torch.zeros(1, 2), list(lin.parameters()))


def receive_spec(data_fd: int) -> dict:
    """The run's spec, sent by the runner as one SPEC frame on the data pipe."""
    api._S.data_fd = data_fd
    magic, kind, n, _, _ = wire.HEADER.unpack(api._read_exact(wire.HEADER.size))
    if magic != wire.MAGIC or kind != wire.SPEC:
        raise SystemExit("standby: no spec from the runner")
    return json.loads(bytes(api._read_exact(n)))


def main(argv: list[str]) -> int:
    if argv[0] not in ("--standby", "--wait"):
        raise SystemExit("harness: run by the runner only")
    if argv[0] == "--standby":
        preload(argv[3] if len(argv) > 3 else "cpu")
    spec = receive_spec(int(argv[2]))
    import numpy as np
    import torch

    # Import what train.py will use from the locked package before train.py's folder is on sys.path.
    import trainer.dataloader, trainer.tokenizer  # noqa: F401,E401

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    random.seed(spec["seed"])
    np.random.seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    api._install(spec, spec["event_fd"], spec["data_fd"])
    api._emit({"event": "ready"})
    train_py = spec["train_py"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(train_py)))
    sys.argv = [train_py]
    runpy.run_path(train_py, run_name="__main__")
    print("train.py ended without calling api.submit(model)", file=sys.stderr, flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

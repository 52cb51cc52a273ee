"""Child-process entry (locked): seeds, threads, the val/confirm read guard, then runs train.py.

Run as `python -I -m trainer.harness SPEC.json` by the runner, never by hand.
"""
from __future__ import annotations

import json
import os
import random
import runpy
import sys

from trainer import api

GUARDED_EVENTS = {"open", "os.link", "os.symlink", "os.rename", "shutil.copyfile", "shutil.copytree",
                  "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.truncate"}


def install_read_guard(forbidden: list[str]) -> None:
    """An audit hook (which cannot be removed) that refuses any open of val/confirm data
    and any command line mentioning it, and tells the parent, which marks the run crashed
    even if train.py swallows the PermissionError."""
    paths = [os.path.realpath(p) for p in forbidden]
    names = [p for p in paths if os.path.isfile(p)]
    dirs = [p.rstrip(os.sep) + os.sep for p in paths if not os.path.isfile(p)]
    busy = [False]

    def hit(text: str) -> str | None:
        for p in names:
            if p in text or os.path.basename(p) in text:
                return p
        for d in dirs:
            if d in text or text == d.rstrip(os.sep):
                return d
        return None

    def hook(event: str, args: tuple) -> None:
        if event not in GUARDED_EVENTS or busy[0]:
            return
        busy[0] = True
        try:
            found = None
            for a in args:
                if isinstance(a, (str, bytes, os.PathLike)):
                    try:
                        s = os.fsdecode(a)
                    except Exception:
                        continue
                    found = hit(os.path.realpath(s) if event == "open" else s) or hit(s)
                elif isinstance(a, (list, tuple)):
                    found = hit(" ".join(os.fsdecode(x) for x in a if isinstance(x, (str, bytes))))
                if found:
                    break
        finally:
            busy[0] = False
        if found:
            api._emit({"event": "violation", "path": found})
            raise PermissionError(f"train.py tried to read the val split ({found}): held-out data is locked")

    sys.addaudithook(hook)


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        spec = json.load(f)
    fd = spec.get("event_fd")
    import numpy as np
    import torch

    # Import what train.py will use from the locked package before train.py's folder is on sys.path.
    import trainer.dataloader, trainer.tokenizer  # noqa: F401,E401

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    random.seed(spec["seed"])
    np.random.seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    api._install(spec, fd)
    install_read_guard(spec.get("forbidden", []))
    api._emit({"event": "ready", "pid": os.getpid()})
    train_py = spec["train_py"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(train_py)))
    sys.argv = [train_py]
    runpy.run_path(train_py, run_name="__main__")
    print("train.py ended without calling api.submit(model)", file=sys.stderr, flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

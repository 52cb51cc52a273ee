"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The lowest layer on purpose: trainer, agents and coordinator all write through `atomic_write`.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[BinaryIO], object], *,
                 fsync: bool = False) -> Path:
    """Write `data` to `path` through a temp file in the same directory, then os.replace.

    `data`: text (UTF-8), bytes, or a function given the open binary temp file (pickle.dump,
    np.save, savefig, pq.write_table...). The temp name starts with "." and is unique per
    process and thread (git skips dot-names when it lists loose refs and objects), and is
    removed when writing fails. Missing parent directories are created. `fsync`: flush the
    data to disk before the rename (the rename itself is not synced)."""
    path = os.fspath(path)
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:  # the directory is missing (or was pruned, as git pack-refs does)
        os.makedirs(d or ".", exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        if callable(data):
            with os.fdopen(fd, "wb") as f:
                data(f)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
        else:
            view = memoryview(data.encode() if isinstance(data, str) else data)
            try:
                while view:
                    view = view[os.write(fd, view):]
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return Path(path)

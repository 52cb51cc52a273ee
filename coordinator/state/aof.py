"""Repair of redis's append-only file before redis loads it: a transaction cut short by a crash.

The coordinator writes its ledger in MULTI/EXEC batches (and a Lua script's writes reach the AOF
wrapped in MULTI/EXEC too), with `appendfsync always`. A redis-server killed while it writes a
batch to the AOF leaves part of it on disk: `MULTI`, some whole commands, half a command. Redis
7.0 (Debian's) loads such a file with `aof-load-truncated yes` by cutting the half command only,
so the file keeps an unclosed `MULTI` and the next writes are appended after it; at the next
start the loader reads `MULTI ... MULTI ... EXEC` and applies the cut batch together with the
next one (valkey-io/valkey#4342 fixed the same in the server, 2026-08). The client never got an
answer for the cut batch and sent it again, so its writes land twice: the chaos test
(tests/test_chaos.py) found a record event twice in the ledger after two redis kills in a row.

`repair(appendonlydir)` runs before every start of a redis-server this project manages
(coordinator/state/redisd.py): in each incremental AOF file of the manifest it removes a
transaction that was never closed (the tail from its MULTI, or, in a file a server already
damaged so, the span from that MULTI to the next one) and a half-written last command. What it
removes was never acknowledged to a client. Nothing else is touched; a file it cannot parse is
left to redis-server.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class _Malformed(Exception):
    pass


@dataclass
class Cut:
    file: str
    start: int
    end: int
    why: str

    def __str__(self) -> str:
        return f"{self.file}: bytes {self.start}-{self.end} ({self.end - self.start}) removed: {self.why}"


def _header(buf: bytes, pos: int, mark: bytes) -> tuple[int, int] | None:
    """The number on the line at `pos` that starts with `mark` (`*` argc, `$` length) and where the
    next line starts; None when the line is cut off. Raises _Malformed for any other line."""
    if buf[pos:pos + 1] != mark:
        raise _Malformed(pos)
    e = buf.find(b"\r\n", pos)
    if e < 0:
        return None
    try:
        return int(buf[pos + 1:e]), e + 2
    except ValueError:
        raise _Malformed(pos) from None


def _commands(buf: bytes):
    """(start, end, NAME) of each whole command; then ("short", start) when the last is cut off.
    Raises _Malformed for bytes that are no AOF command at a command boundary."""
    pos, n = 0, len(buf)
    while pos < n:
        if buf[pos:pos + 1] == b"#":   # an annotation (aof-timestamp-enabled): one line
            e = buf.find(b"\r\n", pos)
            if e < 0:
                yield ("short", pos)
                return
            pos = e + 2
            continue
        h = _header(buf, pos, b"*")
        if h is None:
            yield ("short", pos)
            return
        argc, p = h
        name = b""
        for i in range(argc):
            h = _header(buf, p, b"$") if p < n else None
            if h is None or h[1] + h[0] + 2 > n:
                yield ("short", pos)
                return
            size, start = h
            if i == 0:
                name = buf[start:start + size].upper()
            p = start + size + 2
        yield (pos, p, name)
        pos = p


def _cut(cuts: list[Cut], file: str, start: int, end: int, why: str) -> None:
    """Add [start, end) to `cuts` (in order), joined to the last cut when they touch."""
    if cuts and cuts[-1].end == start:
        cuts[-1].end = end
    else:
        cuts.append(Cut(file, start, end, why))


def _cut_commands(cuts: list[Cut], cmds: list[tuple[int, int, bytes]], file: str, why: str) -> None:
    """Cut `cmds` but their SELECTs (a database switch redis writes before the first write after a
    start: it belongs to what follows, and is harmless to keep)."""
    for start, end, name in cmds:
        if name != b"SELECT":
            _cut(cuts, file, start, end, why)


def cuts_of(buf: bytes, file: str = "") -> list[Cut]:
    """What repair() removes from one incremental AOF's bytes, in order (raises _Malformed)."""
    cuts: list[Cut] = []
    open_: list[tuple[int, int, bytes]] | None = None   # the commands since an unclosed MULTI
    short: int | None = None
    for c in _commands(buf):
        if c[0] == "short":
            short = c[1]
            break
        name = c[2]
        if name == b"MULTI":
            if open_ is not None:
                _cut_commands(cuts, open_, file, "a transaction never closed (MULTI without EXEC), "
                                                 "followed by later writes")
            open_ = [c]
        elif name == b"EXEC":
            open_ = None
        elif open_ is not None:
            open_.append(c)
    if open_ is not None:
        _cut_commands(cuts, open_, file, "a transaction cut short at the end of the file")
    if short is not None:
        _cut(cuts, file, short, len(buf), "a command cut short at the end of the file")
    return cuts


def _incr_files(appendonlydir: Path) -> list[Path]:
    manifests = sorted(appendonlydir.glob("*.manifest"))
    if not manifests:
        return []
    out = []
    for line in manifests[-1].read_text().splitlines():
        parts = line.split()
        kv = dict(zip(parts[::2], parts[1::2]))
        if kv.get("type") == "i" and kv.get("file"):
            out.append(appendonlydir / kv["file"])
    return out


def repair(appendonlydir: Path) -> list[Cut]:
    """Remove, from each incremental AOF file, the transactions a crash cut short (see the module
    docstring). Returns what was removed (logged as a warning); [] when there was nothing."""
    done: list[Cut] = []
    for f in _incr_files(Path(appendonlydir)):
        if not f.exists():
            continue
        buf = f.read_bytes()
        try:
            cuts = cuts_of(buf, f.name)
        except _Malformed as e:
            log.warning("%s: not an AOF redis writes at byte %s: left to redis-server", f, e.args[0])
            continue
        if not cuts:
            continue
        keep, pos = [], 0
        for c in cuts:
            keep.append(buf[pos:c.start])
            pos = c.end
        keep.append(buf[pos:])
        tmp = f.with_name(f.name + ".repair")
        with open(tmp, "wb") as out:
            out.write(b"".join(keep))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, f)
        for c in cuts:
            log.warning("redis AOF repaired: %s", c)
        done += cuts
    return done

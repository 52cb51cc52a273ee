"""Reads W&B offline run directories back: the `.wandb` transaction log, decoded with wandb's
own protobuf `Record` messages.

wandb 0.23 and later have no Python reader of their own (the scanner, `wandb.sdk.internal.
datastore`, went with the legacy internal process; wandb-core reads the file in Go). The
framing is LevelDB's log format, as that module documented it: a 7-byte file header (":W&B",
magic 0xBEE1, version 0), then 32 KiB blocks of records `crc32(4) length(2) type(1) data`,
a payload split over FIRST / MIDDLE / LAST records where it crosses a block.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Every wandb_internal_pb2.Record of one .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path}: not a .wandb file"
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:          # the block's tail is padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:             # zero fill at the end of the last block
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad crc at {pos}"
        pos += HEADER + length
        parts.append(chunk)
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            parts = []
            yield rec


def read_run(run_dir: Path) -> dict:
    """One offline run directory as a dict: id, group, job_type, tags, config, summary, exit_code,
    files (saved under the run's files/), in the order wandb wrote them (later wins)."""
    (log,) = Path(run_dir).glob("run-*.wandb")
    out: dict = {"dir": Path(run_dir), "config": {}, "summary": {}, "files": {}, "exit_code": None}
    for rec in records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.update(id=r.run_id, group=r.run_group, job_type=r.job_type, name=r.display_name,
                       tags=list(r.tags))
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "summary":
            out["summary"].update({u.key: json.loads(u.value_json) for u in rec.summary.update})
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
        elif kind == "files":
            for f in rec.files.files:
                p = Path(run_dir) / "files" / f.path
                if p.is_file():
                    out["files"][f.path] = p.read_text()
    out["config"] = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in out["config"].items()}
    return out


def latest_runs(wandb_dir: Path) -> dict[str, dict]:
    """run id -> its latest state: offline directories of one id (a resumed run) in the order
    written, the later one's fields over the earlier's, as `wandb sync` applies them."""
    dirs = sorted(Path(wandb_dir).glob("offline-run-*"), key=lambda d: (d.stat().st_mtime, d.name))
    out: dict[str, dict] = {}
    for d in dirs:
        r = read_run(d)
        prev = out.get(r["id"])
        if prev is not None:
            r["config"] = {**prev["config"], **r["config"]}
            r["summary"] = {**prev["summary"], **r["summary"]}
            r["files"] = {**prev["files"], **r["files"]}
        out[r["id"]] = r
    return out

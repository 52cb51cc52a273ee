"""The `litellm` backend over real HTTP against a scripted OpenAI-compatible server on
127.0.0.1: answers, 429, 500, a hang, garbage, token and cost accounting, the spending cap,
and the key staying out of records."""
from __future__ import annotations

import pytest

from agents.agent import ResearchAgent
from agents.backends.base import ProposalContext, make_backend
from agents.config import AgentConfig
from agents.errors import BackendRefused, SpendingCapReached
from agents.program import parse_program
from tests.fake_coordinator import (TINY_PROGRAM, TINY_TRAIN, FakeCoordinator, fake_runner,
                                    make_research_repo)
from tests.fake_llm_server import FakeLLMServer

EDIT = ("Let me think.\nDESCRIPTION: deeper\ntrain.py\n<<<<<<< SEARCH\nDEPTH = 4  # layers\n"
        "=======\nDEPTH = 6  # layers\n>>>>>>> REPLACE\n")
SECRET = "sk-test-do-not-leak-1234567890"


def spec(url, **kw):
    s = {"type": "litellm", "model": "openai/fake-model", "api_base": url,
         "api_key_env": "FAKE_LLM_KEY", "timeout_s": 3, "max_retries": 3, "backoff_s": 0.05,
         "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}
    s.update(kw)
    return s


def ctx():
    return ProposalContext(program=parse_program(TINY_PROGRAM, "tiny"), source=TINY_TRAIN,
                           base_commit="a" * 40, agent="a")


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)


def test_retries_through_429_500_and_a_hang_then_answers():
    script = [("status", 429), ("status", 500), ("hang", 30), ("ok", EDIT, 120, 80)]
    with FakeLLMServer(script) as srv:
        b = make_backend(spec(srv.url))
        p = b.propose(ctx())
        assert len(srv.requests) == 4
    new, desc = p.resolve(TINY_TRAIN, max_edit_bytes=10_000, max_file_bytes=100_000)
    assert desc == "deeper" and "DEPTH = 6" in new
    assert (p.prompt_tokens, p.completion_tokens) == (120, 80)
    assert p.cost_usd == pytest.approx((120 * 1000 + 80 * 2000) / 1e6)
    req = srv.requests[-1]
    assert req["model"] == "fake-model"
    user = req["messages"][-1]["content"]
    assert "Research program" in user and "DEPTH = 4" in user
    assert srv.headers[-1].get("Authorization") == f"Bearer {SECRET}"


def test_garbage_is_retried_then_invalid():
    with FakeLLMServer([("garbage",), ("nochoices",), ("ok", "   ")]) as srv:
        b = make_backend(spec(srv.url, max_retries=2))
        p = b.propose(ctx())
        assert len(srv.requests) == 3
    assert p.error and p.error.startswith("litellm: gave up after 3 attempts")
    with pytest.raises(Exception, match="gave up"):
        p.resolve(TINY_TRAIN, max_edit_bytes=10_000, max_file_bytes=100_000)


def test_auth_error_is_not_retried_and_key_not_echoed():
    with FakeLLMServer([("status", 401)]) as srv:
        with pytest.raises(BackendRefused) as e:
            make_backend(spec(srv.url)).propose(ctx())
        assert len(srv.requests) == 1
    assert "AuthenticationError" in str(e.value) and SECRET not in str(e.value)


def test_spending_cap_stops_agent_and_key_never_reaches_records(tmp_path):
    make_research_repo(tmp_path / "home")
    # each answer costs 100*1000/1e6 + 50*2000/1e6 = $0.2; cap $0.5 -> three calls, then stop:
    # the first proposal applies; the second (the same edit, no longer applicable) is asked
    # again once with the parser's message, so it takes two calls
    with FakeLLMServer([("ok", EDIT.replace("DEPTH = 6", "DEPTH = 5"))]) as srv:
        cfg = AgentConfig(name="llm", program_name="tiny", program_text=TINY_PROGRAM,
                          swarm_home=tmp_path / "home", hardware_class="hw", budget=1,
                          backend=spec(srv.url, max_cost_usd=0.5), prepare_ahead=False)
        coord = FakeCoordinator()
        agent = ResearchAgent(cfg, coord, runner=fake_runner())
        summary = agent.run(max_experiments=20)
    assert summary["stop_reason"].startswith("spending cap reached")
    exps = [r for r in coord.all_records() if r.kind == "experiment"]
    assert len(exps) == 2 and sum(r.cost_usd for r in exps) == pytest.approx(0.6)
    assert [(r.prompt_tokens, r.completion_tokens) for r in exps] == [(100, 50), (200, 100)]
    # first: DEPTH 4 -> 5 is ok and kept; then the same edit no longer applies: invalid
    assert [r.status for r in exps] == ["ok", "invalid"]
    assert len(srv.requests) == 3
    dumped = "".join(r.model_dump_json() for r in coord.all_records()) + str(coord.beats)
    assert SECRET not in dumped


def test_cap_already_used_raises_before_calling():
    b = make_backend(spec("http://127.0.0.1:9/v1", max_cost_usd=0.0))
    with pytest.raises(SpendingCapReached):
        b.propose(ctx())


def test_token_cap_binds_where_no_price_is_known(tmp_path):
    make_research_repo(tmp_path / "home")
    # no price: cost stays $0; 150 tokens an answer, cap 400 -> three answers, then stop
    free = {"input_cost_per_mtok": None, "output_cost_per_mtok": None}
    with FakeLLMServer([("ok", EDIT.replace("DEPTH = 6", "DEPTH = 5")), ("ok", EDIT)]) as srv:
        cfg = AgentConfig(name="llm", program_name="tiny", program_text=TINY_PROGRAM,
                          swarm_home=tmp_path / "home", hardware_class="hw", budget=1,
                          backend=spec(srv.url, max_total_tokens=400, **free), prepare_ahead=False)
        agent = ResearchAgent(cfg, FakeCoordinator(), runner=fake_runner())
        summary = agent.run(max_experiments=20)
        assert len(srv.requests) == 3
    assert summary["stop_reason"] == "token cap reached: 450 of 400 tokens used (max_total_tokens)"
    assert summary["spent_tokens"] == 450 and summary["spent_usd"] == 0.0


def test_preflight_says_when_no_price_is_known_and_a_dollar_cap_depends_on_it():
    free = {"input_cost_per_mtok": None, "output_cost_per_mtok": None}
    with FakeLLMServer([("ok", "OK")]) as srv:
        capped = make_backend(spec(srv.url, max_cost_usd=5, **free)).preflight()
        assert len(capped) == 1 and "knows no price for 'openai/fake-model'" in capped[0]
        assert "max_cost_usd=5 cannot stop it" in capped[0]
        assert make_backend(spec(srv.url, **free)).preflight() == []   # no cap in dollars: nothing to say
        assert make_backend(spec(srv.url, max_total_tokens=10, **free)).preflight() == []
        assert make_backend(spec(srv.url, max_cost_usd=5)).preflight() == []   # a price is configured
        assert srv.requests[0]["max_tokens"] == 1


PAGE = ("<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>502 Bad Gateway</title>"
        "<style>body{font-family:sans-serif}</style></head><body><h1>Bad Gateway</h1><p>"
        + "The proxy server received an invalid response from an upstream server. " * 30
        + "</p></body></html>")


@pytest.mark.parametrize("status", [502, 404])
def test_an_html_error_page_is_summarised_by_status_and_title(status):
    from agents.errors import BackendUnavailable

    with FakeLLMServer([("raw", status, "text/html", PAGE)]) as srv:
        b = make_backend(spec(srv.url, max_retries=0))
        with pytest.raises((BackendUnavailable, BackendRefused)) as e:
            b.propose(ctx())
    line = str(e.value)
    assert "\n" not in line and "<" not in line and "Bad Gateway</title>" not in line
    assert f"(HTTP {status}): an HTML page titled '502 Bad Gateway'" in line
    assert srv.url in line and len(line) < 300


def test_an_oversized_error_body_is_cut_between_words():
    body = '{"error": {"message": "' + " ".join(f"word{i}" for i in range(400)) + '"}}'
    with FakeLLMServer([("raw", 400, "application/json", body)]) as srv:
        with pytest.raises(BackendRefused) as e:
            make_backend(spec(srv.url)).propose(ctx())
    line = str(e.value)
    assert "BadRequestError (HTTP 400): word0 word1" in line
    kept = line.split("(HTTP 400): ")[1].split(" ... (")[0].split()
    assert kept == [f"word{i}" for i in range(len(kept))]   # whole words only, none cut
    assert line.endswith("more characters)") and len(line) < 400

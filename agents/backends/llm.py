"""`litellm`: any provider's model behind litellm, with retries, token and cost accounting,
and a per-agent spending cap. litellm is imported on first use (its import takes seconds).

An answer is a Proposal (parsed by the agent); no answer is an exception: BackendUnavailable
(down, timed out, 5xx, 429 after the retries: the agent waits and asks again) or BackendRefused
(auth, bad model, other 4xx: the agent stops). An answer whose edit cannot be used is asked
again once, with the parser's message.
"""
from __future__ import annotations

import html
import logging
import os
import re
import threading
import time
from typing import Literal

import tenacity
from pydantic import BaseModel, ConfigDict, Field

from agents.backends.base import Proposal, ProposalContext, register_backend
from agents.edits import apply_edit, parse_edit, validate_source
from agents.errors import (BackendRefused, BackendUnavailable, InvalidEdit, ProposalAbandoned,
                           SpendingCapReached)
from agents.prompt import SYSTEM, fix_prompt, retry_prompt, user_prompt

log = logging.getLogger(__name__)


class LitellmSpec(BaseModel):
    """Any provider litellm knows; the key comes from the env var named by api_key_env."""
    model_config = ConfigDict(extra="forbid")
    type: Literal["litellm"] = "litellm"
    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)
    temperature: float | None = None
    timeout_s: float = Field(default=120.0, gt=0)      # one HTTP call
    max_retries: int = Field(default=4, ge=0)          # on 429, 5xx, timeouts, garbage
    backoff_s: float = Field(default=2.0, ge=0)        # first retry delay, doubled each time
    max_tokens: int = Field(default=4096, gt=0)
    # Price overrides (USD per million tokens) for models litellm's bundled map does not know.
    input_cost_per_mtok: float | None = Field(default=None, ge=0)
    output_cost_per_mtok: float | None = Field(default=None, ge=0)
    # Per agent: stop after this many tokens (prompt + completion), priced or not.
    max_total_tokens: int | None = Field(default=None, ge=0)


_NOT_RETRYABLE = ("AuthenticationError", "PermissionDeniedError", "NotFoundError",
                  "BadRequestError", "ContextWindowExceededError", "UnsupportedParamsError",
                  "PaymentRequiredError", "UnprocessableEntityError")
_PER_PROPOSAL = ("ContentPolicyViolationError",)   # this prompt only: an invalid proposal
# Past the HTTP timeout: the watchdog that makes timeout_s cover the whole call (connect, send,
# wait, read; httpx's own timeout is per phase) only fires on a server that trickles bytes.
_WATCHDOG_GRACE_S = 5.0


class _WallTimeout(Exception):
    pass


class _Again(Exception):
    """An attempt failed in a way another attempt may fix (429, 5xx, time-out, no content).
    `kind`: "down" (no answer) or "answer" (an unusable one)."""

    def __init__(self, why: str, kind: str):
        super().__init__(why)
        self.kind = kind


class _Fatal(Exception):
    """This prompt cannot be answered (a content policy): an invalid proposal."""


def _litellm():
    # Without this litellm fetches its price list from the internet at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    litellm.suppress_debug_info = True
    return litellm


def _causes(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _strip_prefixes(msg: str, name: str) -> str:
    # litellm says the class three times: "litellm.AuthenticationError: AuthenticationError:
    # OpenAIException - scripted 401"
    prefixes = (f"litellm.{name}:", f"{name}:", "OpenAIException -", "OpenAIException:")
    while True:
        stripped = msg.lstrip()
        for p in prefixes:
            if stripped.startswith(p):
                stripped = stripped[len(p):]
        if stripped.strip() == msg.strip():
            return msg.strip()
        msg = stripped


_HTML = re.compile(r"<!doctype html|<html[\s>]|<head[\s>]|<body[\s>]", re.IGNORECASE)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
MAX_ERROR_CHARS = 240   # of an error body in the one-line message (a proxy's page is kilobytes)


def summarize_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error body as one short line: an HTML page (a proxy's or a web server's, put whole
    into litellm's message) becomes its <title>, and a long body is cut between words with
    the count of what was left out."""
    m = _HTML.search(text)
    if m:
        before = text[:m.start()].rstrip(" \t\n:'\"-")
        title = _TITLE.search(text)
        t = " ".join(html.unescape(title.group(1)).split()) if title else ""
        page = f"an HTML page titled {t[:120]!r}" if t else "an HTML page without a title"
        text = f"{before}: {page}" if before else page
    return cut_words(" ".join(text.split()), limit)


def cut_words(text: str, limit: int) -> str:
    """`text` up to `limit` characters, cut at a space, never inside a word (a single word
    longer than half the limit, a token or a URL, is cut where it has to be)."""
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(" ", 1)[0]
    if len(cut) < limit // 2:
        cut = text[:limit]
    return f"{cut.rstrip()} ... ({len(text) - len(cut)} more characters)"


def classify(e: BaseException) -> str:
    """What a failed call means: "refused" (asking again cannot help), "invalid" (this prompt
    only), "answer" (the server answered with something unusable), or "down" (try later)."""
    name = type(e).__name__
    status = getattr(e, "status_code", None)
    if name in _PER_PROPOSAL:
        return "invalid"
    if name in _NOT_RETRYABLE:
        return "refused"
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429):
        return "refused"
    text = str(e)
    if "Received response" in text or "Expecting value" in text:
        return "answer"   # a 200 whose body is not JSON (a proxy's HTML page)
    return "down"


class LitellmBackend:
    """Chat-completion proposals. `spent_usd` accumulates over the agent's life."""

    name = "litellm"

    def __init__(self, spec: LitellmSpec, *, seed: int = 0, agent: str = ""):
        self.spec = spec
        self.seed = seed
        self.agent = agent
        self.spent_usd = 0.0
        self.spent_tokens = 0
        self._cancel = threading.Event()

    def _key(self) -> str | None:
        if not self.spec.api_key_env:
            return None
        return os.environ.get(self.spec.api_key_env)

    def _scrub(self, text: str) -> str:
        key = self._key()
        text = str(text)
        return text.replace(key, "***") if key else text

    def where(self) -> str:
        """The model and the URL, as a user wrote them, for messages."""
        s = self.spec
        return f"model {s.model!r}" + (f" at {s.api_base}" if s.api_base else "")

    def describe(self, e: BaseException) -> str:
        """One line a user can act on."""
        s = self.spec
        if isinstance(e, _WallTimeout) or any(type(c).__name__ in ("Timeout", "APITimeoutError",
                                                                   "ReadTimeout", "TimeoutException")
                                              for c in _causes(e)):
            return (f"no answer from {self.where()} within timeout_s={s.timeout_s:g} s "
                    f"(raise the backend's timeout_s for a slow model)")
        if any(isinstance(c, ConnectionRefusedError) for c in _causes(e)):
            return f"cannot connect to {self.where()}: connection refused"
        msg = summarize_error(_strip_prefixes(self._scrub(e), type(e).__name__))
        if "Connection error" in msg:
            return f"cannot connect to {self.where()}: {msg}"
        status = getattr(e, "status_code", None)
        http = f" (HTTP {status})" if isinstance(status, int) else ""
        return f"{type(e).__name__}{http}: {msg}"

    def _cost(self, litellm, resp, pt: int, ct: int) -> float:
        s = self.spec
        if s.input_cost_per_mtok is not None or s.output_cost_per_mtok is not None:
            return (pt * (s.input_cost_per_mtok or 0) + ct * (s.output_cost_per_mtok or 0)) / 1e6
        try:
            return float(litellm.completion_cost(completion_response=resp) or 0.0)
        except Exception:
            # Unknown model (a local server): no price known; the cap cannot bind on it.
            return 0.0

    def _kw(self, messages: list[dict], max_tokens: int) -> dict:
        s = self.spec
        kw = dict(model=s.model, messages=messages, timeout=s.timeout_s, max_tokens=max_tokens,
                  num_retries=0, max_retries=0)
        if s.api_base:
            kw["api_base"] = s.api_base
        key = self._key()
        if key:
            kw["api_key"] = key
        elif (s.api_base and s.model.startswith("openai/") and not s.api_key_env
              and not os.environ.get("OPENAI_API_KEY")):
            # A local OpenAI-compatible server wants no key, but the openai client refuses to
            # send a request without one.
            kw["api_key"] = "no-key"
        return kw

    def cancel(self) -> None:
        """Abandon the call in flight (the agent is stopping): propose/fix raise
        ProposalAbandoned within a fraction of a second."""
        self._cancel.set()

    def _complete(self, litellm, kw: dict):
        """litellm.completion under a wall clock of timeout_s (+ grace), abandoned on cancel."""
        box: dict = {}

        def call():
            try:
                box["resp"] = litellm.completion(**kw)
            except BaseException as e:  # handed to the caller
                box["err"] = e

        t = threading.Thread(target=call, name=f"{self.agent}-llm", daemon=True)
        t.start()
        limit = time.monotonic() + self.spec.timeout_s + _WATCHDOG_GRACE_S
        while t.is_alive():
            if self._cancel.is_set():
                raise ProposalAbandoned("stopped while waiting for the model")
            if time.monotonic() > limit:
                raise _WallTimeout()
            t.join(0.2)
        if "err" in box:
            raise box["err"]
        return box["resp"]

    def _ask(self, messages: list[dict], turn: dict) -> Proposal:
        """One chat completion with retries. Fills `turn` (the transcript of this request)."""
        s = self.spec
        if s.max_cost_usd is not None and self.spent_usd >= s.max_cost_usd:
            raise SpendingCapReached(f"spending cap reached: ${self.spent_usd:.4f} of "
                                     f"${s.max_cost_usd:.4f} spent")
        if s.max_total_tokens is not None and self.spent_tokens >= s.max_total_tokens:
            raise SpendingCapReached(f"token cap reached: {self.spent_tokens} of "
                                     f"{s.max_total_tokens} tokens used (max_total_tokens)")
        if self._cancel.is_set():
            raise ProposalAbandoned("stopped before asking the model")
        litellm = _litellm()
        kw = self._kw(messages, s.max_tokens)
        if s.temperature is not None:
            kw["temperature"] = s.temperature
        out = Proposal()
        attempts = turn.setdefault("attempts", [])

        def attempt() -> str:
            t0 = time.time()

            def note(**kw) -> None:
                attempts.append({"started_at": t0, "duration_s": round(time.time() - t0, 3), **kw})

            try:
                resp = self._complete(litellm, kw)
            except ProposalAbandoned:
                note(error="abandoned: the agent is stopping")
                raise
            except Exception as e:  # litellm maps provider errors onto its own classes
                kind, why = classify(e), self.describe(e)
                note(error=why)
                if kind == "refused":
                    raise BackendRefused(f"litellm {self.where()}: {why}") from None
                if kind == "invalid":
                    raise _Fatal(why) from None
                raise _Again(why, kind) from None
            usage = getattr(resp, "usage", None)
            pt = int(getattr(usage, "prompt_tokens", 0) or 0)
            ct = int(getattr(usage, "completion_tokens", 0) or 0)
            cost = self._cost(litellm, resp, pt, ct)
            out.prompt_tokens += pt
            out.completion_tokens += ct
            out.cost_usd += cost
            self.spent_usd += cost
            self.spent_tokens += pt + ct
            try:
                content = resp.choices[0].message.content
            except (AttributeError, IndexError, TypeError):
                content = None
            if not isinstance(content, str) or not content.strip():
                note(prompt_tokens=pt, completion_tokens=ct, error="answer has no message content")
                raise _Again("answer has no message content", "answer")
            note(prompt_tokens=pt, completion_tokens=ct)
            return content

        def say(state: tenacity.RetryCallState) -> None:
            log.warning("%s: LLM call failed (attempt %d of %d): %s", self.agent,
                        state.attempt_number, s.max_retries + 1, state.outcome.exception())

        def sleep(seconds: float) -> None:   # a stop ends the wait between attempts
            if self._cancel.wait(seconds):
                raise ProposalAbandoned("stopped while waiting to retry the model")

        # litellm's own retries stay off (num_retries=0): they take an answer without content
        # (no choices, blank) as a success, so a second loop would be needed and one budget of
        # max_retries + 1 requests could not be kept; their waits are fixed (backoff_s would be
        # ignored); and once retrying they retry any error, a 401 too. One tenacity loop (the
        # library litellm itself retries with) covers all of it.
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(s.max_retries + 1),
            wait=tenacity.wait_exponential(multiplier=s.backoff_s),   # backoff_s, 2x, 4x, ...
            retry=tenacity.retry_if_exception_type(_Again), before_sleep=say, sleep=sleep,
            reraise=True)
        try:
            out.text = retrying(attempt)
        except _Fatal as e:
            out.error = f"litellm: {e}"
        except _Again as e:
            if e.kind == "down":   # no answer at all: not an experiment
                raise BackendUnavailable(f"litellm {self.where()}: gave up after "
                                         f"{s.max_retries + 1} attempts: {e}") from None
            out.error = f"litellm: gave up after {s.max_retries + 1} attempts: {e}"
        return out

    def _ask_edit(self, user: str, source: str) -> Proposal:
        """Ask; an answer whose edit cannot be used is asked again once, with the reason."""
        started = time.time()
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        transcript: dict = {"backend": self.name, "model": self.spec.model,
                            "api_base": self.spec.api_base, "started_at": started, "turns": []}
        total = Proposal(transcript=transcript)
        try:
            for round_ in range(2):
                turn: dict = {"messages": messages if round_ == 0 else messages[-2:]}
                transcript["turns"].append(turn)
                p = self._ask(messages, turn)
                turn["answer"] = p.text
                total = _add(total, p)
                if p.error or p.text is None:
                    break
                problem = _edit_problem(p.text, source)
                turn["parse"] = problem or "ok"
                if problem is None or round_ == 1:
                    break
                log.info("%s: the answer's edit cannot be used (%s): asking again once",
                         self.agent, problem)
                messages = messages + [{"role": "assistant", "content": p.text},
                                       {"role": "user", "content": retry_prompt(problem)}]
        finally:
            transcript["duration_s"] = round(time.time() - started, 3)
            transcript["prompt_tokens"] = total.prompt_tokens
            transcript["completion_tokens"] = total.completion_tokens
            transcript["cost_usd"] = total.cost_usd
        return total

    def preflight(self) -> list[str]:
        """One tiny completion before the swarm starts. Raises BackendRefused or
        BackendUnavailable with a line naming the model and URL; returns warnings (no price
        known for the model while max_cost_usd caps it), each to say once."""
        s = self.spec
        litellm = _litellm()
        kw = self._kw([{"role": "user", "content": "Answer with: OK"}], 1)
        try:
            self._complete(litellm, kw)
        except Exception as e:
            kind, why = classify(e), self.describe(e)
            why = why if self.where() in why else f"{self.where()}: {why}"
            if kind == "refused":
                raise BackendRefused(why) from None
            if kind == "down" and getattr(e, "status_code", None) != 429:  # 429: it is there
                raise BackendUnavailable(why) from None
        warnings = []
        # Only a cap in dollars depends on the price: a local model without max_cost_usd costs
        # $0 and nothing is wrong with that.
        if (s.max_cost_usd is not None and s.input_cost_per_mtok is None
                and s.output_cost_per_mtok is None and not self._priced(litellm)):
            warnings.append(f"litellm knows no price for {s.model!r}: its cost counts as $0, so "
                            f"max_cost_usd={s.max_cost_usd:g} cannot stop it (set input_cost_per_mtok "
                            f"and output_cost_per_mtok, or cap tokens with max_total_tokens)")
        return warnings

    def _priced(self, litellm) -> bool:
        try:
            info = litellm.get_model_info(self.spec.model)
        except Exception:
            return False
        return bool(info.get("input_cost_per_token") or info.get("output_cost_per_token"))

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Ask the model for an edit. Raises SpendingCapReached when the cap is used up,
        BackendUnavailable / BackendRefused when there is no answer, ProposalAbandoned
        after cancel()."""
        return self._ask_edit(user_prompt(ctx), ctx.source)

    def fix(self, ctx: ProposalContext, log_tail: str) -> Proposal:
        """Ask the model to repair the crashed train.py (ctx.source) given the log tail."""
        return self._ask_edit(fix_prompt(ctx, log_tail), ctx.source)


def _edit_problem(text: str, source: str) -> str | None:
    """Why the answer's edit cannot be used on `source`, or None. Size limits are the agent's
    (checked when it resolves the proposal); here only what a second answer can repair."""
    try:
        new = apply_edit(parse_edit(text), source, max_edit_bytes=1 << 30)
        validate_source(new, source, max_file_bytes=1 << 30)
    except InvalidEdit as e:
        return str(e)
    return None


def _add(total: Proposal, p: Proposal) -> Proposal:
    """The last answer with the usage of every request behind it."""
    p.prompt_tokens += total.prompt_tokens
    p.completion_tokens += total.completion_tokens
    p.cost_usd += total.cost_usd
    p.transcript = total.transcript
    return p


register_backend("litellm", LitellmBackend, LitellmSpec)

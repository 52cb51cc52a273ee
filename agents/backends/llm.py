"""`litellm`: any provider's model behind litellm, with retries, token and cost accounting,
and a per-agent spending cap. litellm is imported on first use (its import takes seconds)."""
from __future__ import annotations

import logging
import os
from typing import Literal

import tenacity
from pydantic import BaseModel, ConfigDict, Field

from agents.backends.base import Proposal, ProposalContext, register_backend
from agents.errors import SpendingCapReached
from agents.prompt import SYSTEM, fix_prompt, user_prompt

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

_NOT_RETRYABLE = ("AuthenticationError", "PermissionDeniedError", "NotFoundError",
                  "BadRequestError", "ContextWindowExceededError", "ContentPolicyViolationError",
                  "UnsupportedParamsError", "PaymentRequiredError")


class _Again(Exception):
    """An attempt failed in a way another attempt may fix (429, 5xx, time-out, no content)."""


class _Fatal(Exception):
    """An attempt failed in a way no retry fixes (a bad key, an unknown model...)."""


def _litellm():
    # Without this litellm fetches its price list from the internet at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    litellm.suppress_debug_info = True
    return litellm


class LitellmBackend:
    """Chat-completion proposals. `spent_usd` accumulates over the agent's life."""

    name = "litellm"

    def __init__(self, spec: LitellmSpec, *, seed: int = 0, agent: str = ""):
        self.spec = spec
        self.seed = seed
        self.agent = agent
        self.spent_usd = 0.0

    def _key(self) -> str | None:
        if not self.spec.api_key_env:
            return None
        return os.environ.get(self.spec.api_key_env)

    def _scrub(self, text: str) -> str:
        key = self._key()
        line = " ".join(str(text).split())[:300]
        return line.replace(key, "***") if key else line

    def _cost(self, litellm, resp, pt: int, ct: int) -> float:
        s = self.spec
        if s.input_cost_per_mtok is not None or s.output_cost_per_mtok is not None:
            return (pt * (s.input_cost_per_mtok or 0) + ct * (s.output_cost_per_mtok or 0)) / 1e6
        try:
            return float(litellm.completion_cost(completion_response=resp) or 0.0)
        except Exception:
            # Unknown model (a local server): no price known; the cap cannot bind on it.
            return 0.0

    def _ask(self, user: str) -> Proposal:
        s = self.spec
        if s.max_cost_usd is not None and self.spent_usd >= s.max_cost_usd:
            raise SpendingCapReached(f"spending cap reached: ${self.spent_usd:.4f} of "
                                     f"${s.max_cost_usd:.4f} spent")
        litellm = _litellm()
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        # litellm's own retries stay off (num_retries=0): they take an answer without content
        # (no choices, blank) as a success, so a second loop would be needed and one budget of
        # max_retries + 1 requests could not be kept; their waits are fixed (backoff_s would be
        # ignored); and once retrying they retry any error, a 401 too. One tenacity loop (the
        # library litellm itself retries with) covers all of it.
        kw = dict(model=s.model, messages=messages, timeout=s.timeout_s, max_tokens=s.max_tokens,
                  num_retries=0, max_retries=0)
        if s.api_base:
            kw["api_base"] = s.api_base
        key = self._key()
        if key:
            kw["api_key"] = key
        if s.temperature is not None:
            kw["temperature"] = s.temperature
        out = Proposal()

        def attempt() -> str:
            try:
                resp = litellm.completion(**kw)
            except Exception as e:  # litellm maps provider errors onto its own classes
                why = f"{type(e).__name__}: {self._scrub(e)}"
                if type(e).__name__ in _NOT_RETRYABLE:
                    raise _Fatal(why) from None
                raise _Again(why) from None
            usage = getattr(resp, "usage", None)
            pt = int(getattr(usage, "prompt_tokens", 0) or 0)
            ct = int(getattr(usage, "completion_tokens", 0) or 0)
            cost = self._cost(litellm, resp, pt, ct)
            out.prompt_tokens += pt
            out.completion_tokens += ct
            out.cost_usd += cost
            self.spent_usd += cost
            try:
                content = resp.choices[0].message.content
            except (AttributeError, IndexError, TypeError):
                content = None
            if not isinstance(content, str) or not content.strip():
                raise _Again("answer has no message content")
            return content

        def say(state: tenacity.RetryCallState) -> None:
            log.warning("%s: LLM call failed (attempt %d): %s", self.agent, state.attempt_number,
                        state.outcome.exception())

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(s.max_retries + 1),
            wait=tenacity.wait_exponential(multiplier=s.backoff_s),   # backoff_s, 2x, 4x, ...
            retry=tenacity.retry_if_exception_type(_Again), before_sleep=say, reraise=True)
        try:
            out.text = retrying(attempt)
        except _Fatal as e:
            out.error = f"litellm: {e}"
        except _Again as e:
            out.error = f"litellm: gave up after {s.max_retries + 1} attempts: {e}"
        return out

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Ask the model for an edit. Raises SpendingCapReached when the cap is used up."""
        return self._ask(user_prompt(ctx))

    def fix(self, ctx: ProposalContext, log_tail: str) -> Proposal:
        """Ask the model to repair the crashed train.py (ctx.source) given the log tail."""
        return self._ask(fix_prompt(ctx, log_tail))


register_backend("litellm", LitellmBackend, LitellmSpec)

"""The agent's short exception hierarchy; each message is one line naming what is wrong."""
from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agents package raises on purpose."""


class ProgramError(AgentError):
    """A research program (Markdown + optional YAML block) is malformed."""


class InvalidEdit(AgentError):
    """A proposed edit cannot be used: it does not apply, touches a locked file, does not
    compile, or is too large. The message becomes the record's `reason`."""


class BackendError(AgentError):
    """A proposal backend failed: no answer to judge, so no experiment (and no record)."""


class BackendUnavailable(BackendError):
    """The backend did not answer after its retries: unreachable, timed out, 5xx, rate-limited.
    Not an experiment: the agent waits (growing, capped) and asks again."""


class BackendRefused(BackendError):
    """The backend refuses for good: bad model string, no provider, auth failure, a 4xx other
    than 429, a prompt over the model's context. Asking again cannot help: the agent stops
    with this one-line reason."""


class ProposalAbandoned(BackendError):
    """The agent is stopping: the call in flight was abandoned without an answer."""


class SpendingCapReached(AgentError):
    """The agent's LLM spending cap is used up: the agent stops cleanly."""


class WorktreeError(AgentError):
    """A git operation on the agent's worktree failed."""
